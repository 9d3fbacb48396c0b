"""Issue 12, on the real broker: no message can stop the flow.

More than a hundred hostile shapes (every one the issue lists: a 1 MB text built to make a
regex backtrack, 145k e-mails in one attribute, a 2.05 MB payload over the dead-letter
producer's limit, 115k attributes, 8,000 emoji, disguised PII, PII in identifiers, deep
JSON, bad UTF-8...) are sent between valid events.  The flow (``driftline run enrich
--drain`` as a subprocess, default configuration) must exit 0 in one run, and again after
a SIGKILL mid-run and a restart; every message sent must then be in ``enriched`` or
``rejected`` exactly once by its source coordinates, and every refusal must carry a reason.
The output topic is created with a 64 KiB limit, so an enriched record over it must come
out cut down with its hash and size in headers, like the 2.05 MB dead letter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.sinks.parquet import load_entries, open_store
from driftline.testing.hostile import hostile_records, valid_event
from driftline.testing.kafka import consume_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _create(bootstrap: str, topics: dict[str, int], partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1, config={"max.message.bytes": str(limit)}) for t, limit in topics.items()])
    for f in futures.values():
        f.result(30)


def _send(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 8_000_000, "compression.type": "zstd", "linger.ms": 5})
    errors: list[str] = []
    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]


def _env(bootstrap: str, topic: str, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    env.update(
        {
            "DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLINE__KAFKA__INPUT_TOPIC": topic,
            "DRIFTLINE__KAFKA__DEAD_LETTER_TOPIC": f"{topic}.dlq",
            "DRIFTLINE__KAFKA__OUTPUT_TOPIC": f"{topic}.out",
            "DRIFTLINE__KAFKA__METRICS_TOPIC": f"{topic}.metrics",
            "DRIFTLINE__KAFKA__ALERTS_TOPIC": f"{topic}.alerts",
            "DRIFTLINE__KAFKA__POLL_BATCH_SIZE": "50",
            "DRIFTLINE__SINKS__ROOT": str(root),
            "DRIFTLINE__SINKS__FLUSH_SECONDS": "1",
        }
    )
    return env


def _run(env: dict[str, str], recovery: Path, *, kill_after_commits: int | None = None, timeout: float = 420) -> int:
    cmd = [sys.executable, "-m", "driftline.cli", "run", "enrich", "--drain", "--recovery-dir", str(recovery), "--epoch-interval", "0.5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after_commits is not None:
        root = Path(env["DRIFTLINE__SINKS__ROOT"])
        deadline = time.monotonic() + timeout
        while proc.poll() is None and _commits(root) < kill_after_commits and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode not in (0, -signal.SIGKILL, 137):
        raise AssertionError(f"flow failed with {proc.returncode}:\n{err[-3000:]}")
    return proc.returncode


def _commits(root: Path) -> int:
    return sum(len(list((root / ds / "_manifest").glob("*.json"))) for ds in ("enriched", "rejected") if (root / ds / "_manifest").is_dir())


def _dataset(root: Path, name: str) -> pl.DataFrame:
    store = open_store(str(root))
    files = [str(root / name / f.path) for e in load_entries(store, name) for f in e.files]
    return pl.read_parquet(files) if files else pl.DataFrame()


def _check_accounted(root: Path, sent: int) -> pl.DataFrame:
    enriched, rejected = _dataset(root, "enriched"), _dataset(root, "rejected")
    coords = pl.concat([enriched.select("src_partition", "src_offset"), rejected.select("src_partition", "src_offset")])
    assert coords.is_duplicated().sum() == 0, "a message is in the datasets twice"
    assert coords.height == sent, f"{sent} sent, {enriched.height} enriched + {rejected.height} rejected"
    no_reason = rejected.filter((pl.col("reason_codes").list.len() == 0) | (pl.col("reasons").list.len() == 0) | pl.col("stage").is_null())
    assert no_reason.height == 0, f"{no_reason.height} refusals without a reason"
    return rejected


def test_hostile_shapes_never_stop_the_flow_even_after_sigkill(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("hostile")
    _create(kafka_bootstrap, {topic: 8_000_000, f"{topic}.out": 65_536})
    shapes = hostile_records(5)
    assert len(shapes) >= 100
    messages: list[tuple[bytes | None, bytes]] = []
    for i, (_name, payload) in enumerate(shapes):
        messages.append((f"v{i}".encode(), valid_event(i)))
        messages.append((None, payload))
    messages.append((b"last", valid_event(len(shapes))))
    _send(kafka_bootstrap, topic, messages)
    sent = len(messages)

    # One uninterrupted run.
    clean = tmp_path / "clean"
    assert _run(_env(kafka_bootstrap, topic, clean), tmp_path / "clean-rec") == 0
    rejected = _check_accounted(clean, sent)
    codes = {c for cs in rejected["reason_codes"].to_list() for c in cs}
    assert {"pii_budget:too_many_attributes", "pii_budget:too_long", "payload_too_large"} <= codes, codes

    # SIGKILL mid-run, then a restart from the same recovery folder.
    root, recovery = tmp_path / "killed", tmp_path / "rec"
    env = _env(kafka_bootstrap, topic, root)
    assert _run(env, recovery, kill_after_commits=2) in (-signal.SIGKILL, 137, 0)
    assert _run(env, recovery) == 0
    _check_accounted(root, sent)

    # Nothing too large for its topic stopped the flow: it came out cut down, with its hash and size.
    dlq = [m for m in consume_all(kafka_bootstrap, f"{topic}.dlq") if "driftline.truncated" in m.headers]
    assert any(int(m.headers["driftline.original.size"]) > 2_000_000 for m in dlq)
    out = [m for m in consume_all(kafka_bootstrap, f"{topic}.out") if "driftline.truncated" in m.headers]
    assert out and all(len(m.value or b"") < 65_536 and m.headers["driftline.original.sha256"] for m in out)
