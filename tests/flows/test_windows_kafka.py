"""Windows on the real broker: backlogs, restarts and SIGKILLs give the windows of a plain run.

The monitor flow (model-call telemetry) is used because every figure it windows comes
from the data, so two runs over the same topic must agree on every column except
``fired_at`` (when an alert was raised).  Telemetry is spread over three partitions, each
in event-time order, as producers write it; two services, one of which drifts and then
slows down and fails, so alerts fire and resolve; a few calls are written minutes after
their event time, so they are late in every run.

- issue 13: a 3-partition backlog of 30 minutes drained in one run (1 and 2 workers,
  and 2 processes) gives the windows of the same telemetry consumed live, as it was produced;
- issue 21: draining a topic in two runs on one recovery folder, split inside a window,
  gives the metrics, late rows, alerts and Kafka records of a single drain;
- issue 14: SIGKILLs at random moments and right after commits of the window datasets,
  each run resuming from one recovery folder, give the windows and alerts of an
  uninterrupted run, and every call is counted once: in its window or as late; the
  metrics and alerts topics (read_committed) hold each record exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from confluent_kafka import Producer

from driftline.config import PipelineConfig, load_config
from driftline.flows.monitor import build_monitor_flow
from driftline.kafka_io import ensure_topics
from driftline.runner import run_flow
from driftline.sinks.parquet import load_entries, open_store
from driftline.testing.datasets import close_values
from driftline.testing.kafka import consume_all
from driftline.testing.kills import finish_flow_process, start_flow_process

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)
PARTITIONS = 3
NATURAL_KEYS = {"metrics": ["window_start", "key"], "metrics_late": ["window_start", "key", "first_id"], "alerts": ["rule", "key", "window_start", "state"]}
PROCESSING_TIME = ("fired_at",)


def telemetry(minutes: int, per_minute: int, seed: int, *, stale_every: int = 0) -> list[tuple[int, dict[str, Any]]]:
    """``(partition, call)`` pairs in production order: each partition in event-time order.

    ``checkout`` drifts in minutes 4-6 and is slow and failing in minutes 9-11 of every 15;
    with ``stale_every``, every n-th call of partition 1 carries an event time 5 minutes old.
    """
    rng = random.Random(seed)
    out: list[tuple[int, dict[str, Any]]] = []
    n = 0
    for minute in range(minutes):
        phase = minute % 15
        for i in range(per_minute):
            service = "checkout" if i % 2 else "search"
            hot = service == "checkout"
            drifted, slow = hot and 4 <= phase <= 6, hot and 9 <= phase <= 11
            t = T0 + timedelta(minutes=minute, seconds=60 * i / per_minute)
            part = n % PARTITIONS
            if stale_every and part == 1 and n % (stale_every * PARTITIONS) == 1 and minute >= 6:
                t -= timedelta(minutes=5)
            call = {
                "call_id": f"c{n:07d}",
                "event_time": int(t.timestamp() * 1000),
                "service": service,
                "model": "gpt-x" if hot else "gpt-mini",
                "input_tokens": 1000 if slow else 60,
                "output_tokens": 80 if slow else 6,
                "latency_ms": rng.uniform(3000, 8000) if slow else rng.lognormvariate(5, 0.3),
                "confidence": rng.uniform(0.4, 0.7) if drifted else rng.uniform(0.8, 0.95),
                "error_class": "timeout" if slow and i % 10 < 3 else None,
                "label": ("negative" if rng.random() < (0.8 if drifted else 0.3) else "positive"),
                "prompt": "ok",
                "completion": "ok",
            }
            out.append((part, call))
            n += 1
    return out


def produce_calls(bootstrap: str, topic: str, calls: list[tuple[int, dict[str, Any]]], *, pace_s: float = 0.0) -> None:
    """Write calls to their partitions in order; with ``pace_s``, spread them over that many seconds (live)."""
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    start = time.monotonic()
    for k, (part, call) in enumerate(calls):
        producer.produce(topic, value=orjson.dumps(call), key=call["call_id"].encode(), partition=part)
        producer.poll(0)
        if pace_s and k % 200 == 0:
            ahead = start + pace_s * k / len(calls) - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    assert producer.flush(60) == 0


def config(bootstrap: str, topic: str, root: Path, out: str, **monitoring: Any) -> PipelineConfig:
    return load_config(
        None,
        env={},
        overrides={
            "kafka": {
                "bootstrap_servers": bootstrap,
                "telemetry_topic": topic,
                "dead_letter_topic": f"{topic}.dlq",
                "metrics_topic": f"{topic}.metrics.{out}",
                "alerts_topic": f"{topic}.alerts.{out}",
            },
            "sinks": {"root": str(root), "flush_seconds": 0.5},
            "models": {"pricing": {"gpt-x": {"input_per_mtok": 15.0, "output_per_mtok": 50.0}}},
            "monitoring": {"drift": {"warmup_windows": 3}, **monitoring},
        },
    )


def env_of(cfg: PipelineConfig) -> dict[str, str]:
    """The same configuration as environment variables, for ``driftline run`` in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    k = cfg.kafka
    env.update(
        {
            "DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
            "DRIFTLINE__KAFKA__TELEMETRY_TOPIC": k.telemetry_topic,
            "DRIFTLINE__KAFKA__DEAD_LETTER_TOPIC": k.dead_letter_topic,
            "DRIFTLINE__KAFKA__METRICS_TOPIC": k.metrics_topic,
            "DRIFTLINE__KAFKA__ALERTS_TOPIC": k.alerts_topic,
            "DRIFTLINE__SINKS__ROOT": cfg.sinks.root,
            "DRIFTLINE__SINKS__FLUSH_SECONDS": "0.5",
            "DRIFTLINE__MODELS__PRICING": orjson.dumps({"gpt-x": {"input_per_mtok": 15.0, "output_per_mtok": 50.0}}).decode(),
            "DRIFTLINE__MONITORING__DRIFT__WARMUP_WINDOWS": "3",
        }
    )
    return env


def start_run(env: dict[str, str], recovery: Path, *, drain: bool = True, final: bool = False, fault: str | None = None) -> subprocess.Popen[str]:
    return start_flow_process("monitor", env, recovery, drain=drain, final=final, fault=fault)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> int:
    finish_flow_process(proc, timeout)
    return proc.returncode


def dataset(root: Path, name: str) -> pl.DataFrame:
    store = open_store(str(root))
    files = [str(root / name / f.path) for e in load_entries(store, name) for f in e.files]
    return pl.read_parquet(files) if files else pl.DataFrame()


def committed_rows(root: Path, name: str) -> int:
    store = open_store(str(root))
    return sum(f.rows for e in load_entries(store, name) for f in e.files) if (root / name).is_dir() else 0


def assert_same(got: pl.DataFrame, want: pl.DataFrame, name: str) -> None:
    """Equal rows (natural keys unique), floats up to summation order."""
    assert got.height == want.height, f"{name}: {got.height} rows, expected {want.height}"
    if not got.height:
        return
    keys = NATURAL_KEYS[name]
    assert got.select(keys).is_duplicated().sum() == 0, f"{name}: a natural key twice"
    cols = [c for c in want.columns if c not in PROCESSING_TIME]
    got, want = got.select(cols).sort(keys), want.select(cols).sort(keys)
    for c in cols:
        a, b = got[c], want[c]
        if a.dtype.is_float():
            close = ((a - b).abs() <= 1e-9 * (a.abs() + b.abs()).clip(lower_bound=1.0)).fill_null(False) | (a.is_null() & b.is_null())
            assert close.all(), f"{name}.{c} differs"
        elif c == "drift":
            assert got.select(pl.col(c).list.len()).equals(want.select(pl.col(c).list.len())), f"{name}.drift differs"
        else:
            assert a.equals(b), f"{name}.{c} differs"


def windows_of(root: Path) -> dict[str, pl.DataFrame]:
    return {name: dataset(root, name) for name in NATURAL_KEYS}


def topic_records(bootstrap: str, topic: str, kind: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """A topic's records by natural key (values without processing-time fields)."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for m in consume_all(bootstrap, topic):
        value = orjson.loads(m.value)
        assert m.key == value["key"].encode()
        for c in PROCESSING_TIME:
            value.pop(c, None)
        out.setdefault(tuple(value[k] for k in NATURAL_KEYS[kind]), []).append(value)
    return out


def assert_same_records(got: dict[tuple[Any, ...], list[dict[str, Any]]], want: dict[tuple[Any, ...], list[dict[str, Any]]], *, once: bool) -> int:
    """The same records by natural key (each exactly once when ``once``); returns how many ``got`` holds."""
    assert got.keys() == want.keys()
    for k, values in got.items():
        assert len(want[k]) == 1 and (len(values) == 1 or not once), (k, len(values))
        assert all(close_values(v, want[k][0]) for v in values), k
    return sum(len(v) for v in got.values())


# ---------------------------------------------------------------------------------
# issue 13: a backlog drained in one run gives the live windows
# ---------------------------------------------------------------------------------
def test_backlog_of_three_partitions_gives_the_live_windows(kafka_bootstrap: str, unique_topic: Callable[[str], str], tmp_path: Path) -> None:
    topic = unique_topic("win-backlog")
    calls = telemetry(30, 360, seed=13)  # 10,800 calls over 30 minutes of event time
    # live: the flow tails the topic while the calls are produced in time order (30 minutes
    # of event time in about 15 s); once every call is stored the process is stopped and a
    # final drain on its recovery folder emits the windows still open
    live_cfg = config(kafka_bootstrap, topic, tmp_path / "live", "live")
    env = env_of(live_cfg)
    rec = tmp_path / "live-rec"
    proc = start_run(env, rec, drain=False)
    ensure_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
    time.sleep(3.0)  # the consumer is up before the first call
    produce_calls(kafka_bootstrap, topic, calls, pace_s=15.0)
    deadline = time.monotonic() + 120
    while committed_rows(tmp_path / "live", "telemetry") < len(calls) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert finish(start_run(env, rec, final=True)) == 0
    live = windows_of(tmp_path / "live")

    # the backlog: the same topic drained from the start in one run, by 1 and by 2 workers
    # in this process, and by 2 processes (driftline run --processes 2)
    for workers in (1, 2, "2 processes"):
        root = tmp_path / f"backlog{workers}".replace(" ", "-")
        cfg = config(kafka_bootstrap, topic, root, f"backlog{workers}".replace(" ", "-"))
        if isinstance(workers, int):
            run_flow(build_monitor_flow(cfg, drain=True), workers=workers, epoch_interval=0.5)
        else:
            cmd = [sys.executable, "-m", "driftline", "run", "monitor", "--drain", "--processes", "2", "--epoch-interval", "0.5"]
            proc = subprocess.run(cmd, env=env_of(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
        backlog = windows_of(root)
        assert backlog["metrics_late"].height == 0 and live["metrics_late"].height == 0, "no call is late"
        assert backlog["metrics"]["events"].sum() == len(calls)
        assert backlog["metrics"].height == 2 * 30
        for name in NATURAL_KEYS:
            assert_same(backlog[name], live[name], name)
    assert live["alerts"].height >= 4  # the drift and slow phases raised and resolved alerts


# ---------------------------------------------------------------------------------
# issue 21: two drains on one recovery folder give the outputs of one drain
# ---------------------------------------------------------------------------------
def test_two_drains_split_inside_a_window_equal_one_drain(kafka_bootstrap: str, unique_topic: Callable[[str], str], tmp_path: Path) -> None:
    topic = unique_topic("win-split")
    calls = telemetry(16, 240, seed=21, stale_every=40)
    cut = next(i for i, (_, c) in enumerate(calls) if c["event_time"] >= int((T0 + timedelta(minutes=9, seconds=30)).timestamp() * 1000))
    produce_calls(kafka_bootstrap, topic, calls[:cut])
    rec = tmp_path / "rec"
    two = config(kafka_bootstrap, topic, tmp_path / "two", "two")
    run_flow(build_monitor_flow(two, drain=True, state_dir=rec), recovery_dir=rec, epoch_interval=0.5)
    first = windows_of(tmp_path / "two")["metrics"]
    assert first.height and first["window_start"].max() < T0 + timedelta(minutes=9)  # window 9 stays open
    produce_calls(kafka_bootstrap, topic, calls[cut:])
    final = two.model_copy(update={"monitoring": two.monitoring.model_copy(update={"end_of_input": "close"})})
    run_flow(build_monitor_flow(final, drain=True, state_dir=rec), recovery_dir=rec, epoch_interval=0.5)

    one = config(kafka_bootstrap, topic, tmp_path / "one", "one")
    run_flow(build_monitor_flow(one, drain=True), epoch_interval=0.5)
    got, want = windows_of(tmp_path / "two"), windows_of(tmp_path / "one")
    assert want["metrics_late"].height > 0 and want["alerts"].height >= 4
    assert want["metrics"]["events"].sum() + want["metrics_late"]["late_events"].sum() == len(calls)
    for name in NATURAL_KEYS:
        assert_same(got[name], want[name], name)
    # the Kafka topics carry the same records (each once: no crash, so no replay)
    for kind in ("metrics", "alerts"):
        assert_same_records(topic_records(kafka_bootstrap, f"{topic}.{kind}.two", kind), topic_records(kafka_bootstrap, f"{topic}.{kind}.one", kind), once=True)


# ---------------------------------------------------------------------------------
# issue 14: SIGKILLs at random moments and right after commits
# ---------------------------------------------------------------------------------
# one run per 3 minutes of telemetry (produced just before it): a fault point, or None for
# a SIGKILL from outside at a random moment (start-up included)
KILLS = [
    None,
    "after_publish@metrics:1",  # a window row committed, not yet snapshotted
    "after_publish@telemetry:2",
    "after_manifest@alerts:1",  # the alert's manifest entry is durable, its file not yet published
    "after_publish@metrics_late:1",
    None,
    "before_manifest@metrics:1",
    None,
]


def test_sigkill_windows_and_alerts_equal_an_uninterrupted_run(kafka_bootstrap: str, unique_topic: Callable[[str], str], tmp_path: Path) -> None:
    topic = unique_topic("win-kill")
    calls = telemetry(24, 300, seed=14, stale_every=30)  # 7,200 calls, some of them late
    rng = random.Random(1414)
    cfg = config(kafka_bootstrap, topic, tmp_path / "killed", "killed")
    env, rec = env_of(cfg), tmp_path / "rec"
    chunk = len(calls) // len(KILLS)
    killed = 0
    for i, fault in enumerate(KILLS):
        produce_calls(kafka_bootstrap, topic, calls[i * chunk : (i + 1) * chunk if i + 1 < len(KILLS) else len(calls)])
        proc = start_run(env, rec, fault=fault)
        if fault is None:
            time.sleep(rng.uniform(0.5, 5.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        killed += finish(proc) != 0
    assert killed >= 5, f"only {killed} of {len(KILLS)} runs were killed"
    assert finish(start_run(env, rec, final=True)) == 0

    clean = config(kafka_bootstrap, topic, tmp_path / "clean", "clean")
    assert finish(start_run(env_of(clean), tmp_path / "clean-rec", final=True)) == 0
    got, want = windows_of(tmp_path / "killed"), windows_of(tmp_path / "clean")
    stored = dataset(tmp_path / "killed", "telemetry")
    assert stored.height == len(calls) and stored["call_id"].n_unique() == len(calls)
    assert got["metrics"]["events"].sum() + got["metrics_late"]["late_events"].sum() == stored.height
    assert got["metrics_late"].height > 0 and got["alerts"].height >= 4
    for name in NATURAL_KEYS:
        assert_same(got[name], want[name], name)
    # Kafka (transactional sinks, read_committed): the same records, each exactly once
    for kind in ("metrics", "alerts"):
        clean_records = topic_records(kafka_bootstrap, f"{topic}.{kind}.clean", kind)
        n = assert_same_records(topic_records(kafka_bootstrap, f"{topic}.{kind}.killed", kind), clean_records, once=True)
        print(f"{kind} topic after {killed} kills: {n} records for {len(clean_records)} windows/alerts")
