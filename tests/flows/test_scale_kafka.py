"""Scale-out on the real broker (issue 13): rescaling through SIGKILLs, two flows and
two processes each under one ``sinks.root``.

- 1 process, SIGKILL; resume with 2 processes (``driftline run --processes 2``), SIGKILL
  the cluster; resume with 1 process until drained, all on one recovery folder, with a
  remote tier on the loopback provider: ``enriched``, ``rejected`` and ``audit`` hold
  each event once, ``driftline verify`` passes, the windows equal an uninterrupted run's,
  and no event is answered twice beyond the requests in flight at each kill.
- enrich and monitor run at the same time under one ``sinks.root``, each as 2
  processes: ``driftline verify`` passes on every dataset, each flow's windows are its
  own (writer ids name the flow and its input topic).

Small on purpose (a few thousand events): every run pays the start-up of its processes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import yaml
from confluent_kafka import Producer

from driftline.kafka_io import ensure_topics
from driftline.models.ledger import recorded_events
from driftline.producer import SyntheticProducer, encode_json, produce
from driftline.sinks.parquet import load_entries, open_store
from driftline.testing.datasets import PROCESSING_TIME, dataset_differences, dataset_frame
from driftline.testing.openai_server import read_log, start_subprocess

pytestmark = pytest.mark.kafka

EVENTS = int(os.environ.get("DRIFTLINE_SCALE_EVENTS", "1500"))
KAFKA_KEY = ["src_topic", "src_partition", "src_offset"]


class UniqueTexts(SyntheticProducer):
    """Synthetic events whose texts never repeat: every event is one provider request,
    whatever the batching (identical inputs would be sent once per batch)."""

    def events(self, n: int) -> Any:
        for i, ev in enumerate(super().events(n)):
            if ev.defect is None:
                record = dict(ev.record, text=f"{ev.record['text']} (#{i})")
                ev = replace(ev, record=record, payload=encode_json(record))
            yield ev


def enrich_config(tmp_path: Path, bootstrap: str, topic: str, base_url: str, root: Path) -> Path:
    config = {
        # two writers per dataset and Kafka output (the most workers these runs have): each
        # topic-partition's rows are written by the sink partition on the worker of its model calls
        "kafka": {
            "bootstrap_servers": bootstrap,
            "input_topic": topic,
            "dead_letter_topic": f"{topic}.dlq",
            "output_topic": f"{topic}.out.{root.name}",
            "transactions": {"partitions": 2},
        },
        "sinks": {"root": str(root), "flush_seconds": 0.5, "partitions": 2},
        "monitoring": {"end_of_input": "close"},
        "recovery": {"partitions": 4},
        "models": {
            "chain": ["primary", "local", "rules"],
            "backends": {
                "primary": {"kind": "openai", "base_url": base_url, "model": "test-model", "timeout_s": 10, "max_in_flight": 16},
                "local": {"kind": "local"},
                "rules": {"kind": "rules"},
            },
            "pricing": {"test-model": {"input_per_mtok": 0.15, "output_per_mtok": 0.60}},
            "cache": {"enabled": False},
            "batching": {"max_rows": 64, "max_wait_ms": 100},
        },
    }
    path = tmp_path / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE", "BYTEWAX"))}


def start(cfg: Path, flow: str, recovery: Path, log: Path, *scaling: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "driftline", "--config", str(cfg), "run", flow, "--drain", "--recovery-dir", str(recovery), "--epoch-interval", "0.5", *scaling]
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, env=env or clean_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def answered(log_path: Path) -> int:
    return len(read_log(log_path))


def verify(root: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "driftline", "verify", "--root", str(root)], capture_output=True, text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def keys(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(KAFKA_KEY)


def test_kill_1_resume_2_processes_kill_resume_1(kafka_bootstrap: str, unique_topic: Callable[[str], str], tmp_path: Path) -> None:
    topic = unique_topic("scale-kill")
    sent = produce(kafka_bootstrap, topic, EVENTS, seed=13, invalid_rate=0.05, pii_rate=0.2, progress=False, generator=UniqueTexts(13, invalid_rate=0.05, pii_rate=0.2))
    valid = sum(1 for e in sent if e.defect is None)
    log_path, ref_log = tmp_path / "requests.jsonl", tmp_path / "ref-requests.jsonl"
    server, base_url = start_subprocess("--port", "0", "--log", str(log_path), "--latency-ms", "20")
    ref_server, ref_url = start_subprocess("--port", "0", "--log", str(ref_log), "--latency-ms", "20")
    root, recovery, ref_root = tmp_path / "killed", tmp_path / "recovery", tmp_path / "uninterrupted"
    cfg = enrich_config(tmp_path, kafka_bootstrap, topic, base_url, root)
    rng = random.Random(13)
    kill_times: list[tuple[float, float]] = []
    durable_at_kill: list[set[str]] = []
    try:
        # the uninterrupted reference: one process, its own recovery folder, root and provider
        ref = start(enrich_config(tmp_path, kafka_bootstrap, topic, ref_url, ref_root), "enrich", tmp_path / "ref-recovery", tmp_path / "ref.log")
        assert ref.wait(timeout=600) == 0, (tmp_path / "ref.log").read_text()[-3000:]

        for n, scaling in enumerate([(), ("--processes", "2"), ()]):
            run_log = tmp_path / f"run{n}.log"
            flow = start(cfg, "enrich", recovery, run_log, *scaling)
            try:
                if n < 2:  # killed once a random share of this run's part of the work is answered
                    target = answered(log_path) + rng.randint(valid // 6, valid // 3)
                    deadline = time.monotonic() + 300
                    while answered(log_path) < target and flow.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                    time.sleep(rng.uniform(0.0, 0.05))
                    assert flow.poll() is None, f"run {n} ended before its kill:\n{run_log.read_text()[-3000:]}"
                    killed_at = time.time()
                    os.killpg(flow.pid, signal.SIGKILL)  # the whole cluster: supervisor and processes
                    flow.wait(timeout=60)
                    durable_at_kill.append(recorded_events(recovery / "model_ledger.sqlite"))
                    # (kill, next start): the server may log a request sent before the kill
                    # after it (a loaded machine); no client runs until the next start
                    kill_times.append((killed_at, time.time()))
                else:
                    assert flow.wait(timeout=600) == 0, run_log.read_text()[-3000:]
            finally:
                if flow.poll() is None:
                    os.killpg(flow.pid, signal.SIGKILL)
                    flow.wait()
        assert '"process_id": 1' in (tmp_path / "run1.log").read_text(), "the second run had a second process"
        time.sleep(1.0)  # requests the killed runs left behind finish (and are logged)
    finally:
        for s in (server, ref_server):
            s.kill()
            s.wait(timeout=10)

    # each event exactly once: in enriched or in rejected, and audited once if valid
    enriched, rejected, audit = (dataset_frame(root, name) for name in ("enriched", "rejected", "audit"))
    assert enriched is not None and rejected is not None and audit is not None
    both = pl.concat([keys(enriched), keys(rejected)])
    assert both.height == EVENTS and not both.is_duplicated().any()
    assert enriched.height == valid and rejected.height == EVENTS - valid
    assert audit.height == enriched.height and keys(audit).sort(KAFKA_KEY).equals(keys(enriched).sort(KAFKA_KEY))
    verify(root)

    # the same datasets as the uninterrupted run: rows by key, windows (counts, cost,
    # drift) equal; what says how a row was produced (replayed from the ledger; retried
    # after a connection hiccup, which a loaded machine gives the uninterrupted run too)
    # and processing times left out
    diff = dataset_differences(ref_root, root, ignore=PROCESSING_TIME | {"model_replayed", "model_retries"})
    assert not diff, diff
    assert (enriched["model_tier"] == "primary").sum() > enriched.height // 2  # the remote tier answered (PII routed local stays local)

    # billing: an event answered twice was in flight at a kill
    log = read_log(log_path)
    billed = Counter(e["key"].split("/")[0] for e in log if e["success"])
    twice = {ev for ev, k in billed.items() if k > 1}
    in_flight: set[str] = set()
    for n, ((k, restart), durable) in enumerate(zip(kill_times, durable_at_kill)):
        since = kill_times[n - 1][1] if n else 0.0
        in_flight |= {e["key"].split("/")[0] for e in log if since < e["t"] < restart and (e["done"] is None or e["done"] > k)}
        in_flight |= {e["key"].split("/")[0] for e in log if e["success"] and since < e["t"] and e["done"] <= k} - durable
    print(f"\n{EVENTS} events, kills at 1 process and at 2 processes: answered twice {len(twice)}, in flight at the kills {len(in_flight)}, requests {len(log)}")
    assert twice <= in_flight


def telemetry_calls(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    t0 = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)
    return [
        {
            "call_id": f"c{i:06d}",
            "event_time": int((t0 + timedelta(seconds=i * 0.5)).timestamp() * 1000),
            "service": "search",  # the enrich flow's sources are reviews, chat, support-desk
            "model": "gpt-mini",
            "input_tokens": 60,
            "output_tokens": 6,
            "latency_ms": rng.lognormvariate(5, 0.3),
            "confidence": rng.uniform(0.8, 0.95),
            "prompt": "ok",
            "completion": "ok",
        }
        for i in range(n)
    ]


def test_enrich_and_monitor_as_two_processes_each_under_one_root(kafka_bootstrap: str, unique_topic: Callable[[str], str], tmp_path: Path) -> None:
    events, calls_topic = unique_topic("scale-both"), unique_topic("scale-calls")
    produce(kafka_bootstrap, events, 1200, seed=5, invalid_rate=0.05, pii_rate=0.2, progress=False)
    calls = telemetry_calls(1200, seed=5)
    ensure_topics(kafka_bootstrap, [calls_topic], partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i, call in enumerate(calls):
        producer.produce(calls_topic, value=orjson.dumps(call), key=call["call_id"].encode(), partition=i % 3)
    assert producer.flush(60) == 0
    root = tmp_path / "shared"
    config = {
        "kafka": {
            "bootstrap_servers": kafka_bootstrap,
            "input_topic": events,
            "telemetry_topic": calls_topic,
            "dead_letter_topic": f"{events}.dlq",
            "output_topic": f"{events}.out",
            "metrics_topic": f"{events}.metrics",
            "alerts_topic": f"{events}.alerts",
        },
        "sinks": {"root": str(root), "flush_seconds": 0.5},
        "monitoring": {"end_of_input": "close"},
    }
    cfg = tmp_path / "both.yaml"
    cfg.write_text(yaml.safe_dump(config))
    flows = {name: start(cfg, name, tmp_path / f"rec-{name}", tmp_path / f"{name}.log", "--processes", "2") for name in ("enrich", "monitor")}
    try:
        for name, proc in flows.items():
            assert proc.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for proc in flows.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    verify(root)
    store = open_store(str(root))
    writers = {e.writer.rsplit("-p", 1)[0] for e in load_entries(store, "metrics")}
    assert writers == {f"enrich.{events}".replace("-", "_"), f"monitor.{calls_topic}".replace("-", "_")}
    metrics = dataset_frame(root, "metrics")
    assert metrics is not None
    monitor_rows = metrics.filter(pl.col("key").str.starts_with("source=search|"))
    assert monitor_rows["events"].sum() == len(calls)  # every call windowed once, none lost to the other flow's keys
    enriched, telemetry = dataset_frame(root, "enriched"), dataset_frame(root, "telemetry")
    assert enriched is not None and telemetry is not None and telemetry.height == len(calls)
