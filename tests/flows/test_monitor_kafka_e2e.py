"""The monitor flow on the real broker: the same drift and alert test on model-call telemetry.

Two services report their model calls to a one-partition telemetry topic (half JSON,
half Avro single-object encoding).  ``checkout`` (model ``gpt-x``) goes through the
phases of the enrich end-to-end test: stable, drifted (lower confidence, more negative
labels), stable, slow and failing (3-9 s latency, timeouts, budget refusals, 20x the
tokens), stable.  ``search`` (model ``gpt-mini``) stays healthy all along and must raise
nothing.  The flow drains the topic in three runs resuming from one recovery folder.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
from confluent_kafka import Producer

from driftline.config import PipelineConfig, load_config
from driftline.flows.monitor import build_monitor_flow
from driftline.kafka_io import ensure_topics
from driftline.runner import run_flow
from driftline.schemas import encode_single_object
from driftline.testing.kafka import consume_all

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PHASES = ["stable"] * 3 + ["drifted"] * 2 + ["stable"] + ["slow"] * 2 + ["stable"]
RUNS = [(0, 5), (6, 7), (8, 8)]
PER_WINDOW = 150  # calls per service and one-minute window
HOT, CALM = "source=checkout|model=gpt-x", "source=search|model=gpt-mini"
EXPECTED = {  # rule -> (window where it fires, window where it resolves) for the checkout key
    "feature_psi_high": (3, 5),  # confidence PSI: telemetry has no feature columns
    "confidence_drift": (3, 5),
    "latency_p95_high": (6, 8),
    "latency_p99_high": (6, 8),
    "error_rate_high": (6, 8),
    "cost_per_request_high": (6, 8),
    "budget_exhausted": (6, 8),
}


def _avro(obj: dict) -> bytes:
    return encode_single_object("model_call", obj)


def calls(window: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One window of telemetry for both services, in event-time order."""
    phase = PHASES[window]
    start = T0 + timedelta(minutes=window)
    out = []
    for service, model in (("checkout", "gpt-x"), ("search", "gpt-mini")):
        hot = service == "checkout"
        drifted, slow = hot and phase == "drifted", hot and phase == "slow"
        for i, s in enumerate(np.sort(rng.uniform(0, 59.9, PER_WINDOW))):
            err = None
            if slow and i % 5 == 0:
                err = "timeout"
            elif slow and i % 7 == 0:
                err = "budget_exhausted"
            out.append(
                {
                    "call_id": f"{service}-{window:02d}-{i:04d}",
                    "event_time": int((start + timedelta(seconds=float(s))).timestamp() * 1000),
                    "service": service,
                    "model": model,
                    "input_tokens": 1000 if slow else (200 if drifted else 50),
                    "output_tokens": 100 if slow else 5,
                    "latency_ms": float(rng.uniform(3000, 9000) if slow else rng.lognormal(5, 0.3)),
                    "confidence": float(rng.uniform(0.45, 0.75) if drifted else rng.uniform(0.8, 0.95)),
                    "error_class": err,
                    "label": str(rng.choice(["positive", "negative"], p=[0.2, 0.8] if drifted else [0.7, 0.3])),
                    "prompt": f"Customer jane.doe{i}@example.com asks about order {window}-{i}",
                    "completion": "Reply sent to jane.doe@example.com" if i % 3 == 0 else "ok",
                }
            )
    return sorted(out, key=lambda c: c["event_time"])


def produce_calls(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> None:
    ensure_topics(bootstrap, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    for n, c in enumerate(rows):
        payload = _avro(c) if n % 2 else orjson.dumps(c)
        producer.produce(topic, value=payload, key=c["call_id"].encode())
        producer.poll(0)
    assert producer.flush(60) == 0


def make_config(bootstrap: str, topic: str, root: Path) -> PipelineConfig:
    return load_config(
        None,
        env={},
        overrides={
            "kafka": {
                "bootstrap_servers": bootstrap,
                "telemetry_topic": topic,
                "dead_letter_topic": f"{topic}.dlq",
                "metrics_topic": f"{topic}.metrics",
                "alerts_topic": f"{topic}.alerts",
            },
            "sinks": {"root": str(root), "flush_seconds": 1.0},
            # $15 per million input and $50 per million output tokens
            "models": {"pricing": {"gpt-x": {"input_per_mtok": 15.0, "output_per_mtok": 50.0}, "gpt-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}},
            "monitoring": {"drift": {"warmup_windows": 2}},
        },
    )


def read_dataset(root: Path, name: str) -> pl.DataFrame:
    files = sorted((root / name).rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()


def window_index(t: datetime) -> int:
    return int((t - T0).total_seconds() // 60)


def test_monitor_flow_drift_and_alerts_on_the_real_broker(kafka_bootstrap: str, unique_topic: Callable[[str], str], tmp_path: Path) -> None:
    topic = unique_topic("telemetry-e2e")
    root, rec = tmp_path / "out", tmp_path / "recovery"
    cfg = make_config(kafka_bootstrap, topic, root)
    rng = np.random.default_rng(8)
    sent = 0
    for first, last in RUNS:
        rows = [c for w in range(first, last + 1) for c in calls(w, rng)]
        produce_calls(kafka_bootstrap, topic, rows)
        sent += len(rows)
        run_flow(build_monitor_flow(cfg, drain=True, state_dir=rec), recovery_dir=rec, epoch_interval=1.0)
    # a payload that is not a model call goes to the dead-letter topic, not the windows;
    # this last run ends the input, so the window left open by the previous runs is emitted
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(topic, value=b'{"call_id": "broken"}')
    assert p.flush(30) == 0
    final = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"end_of_input": "close"})})
    run_flow(build_monitor_flow(final, drain=True, state_dir=rec), recovery_dir=rec, epoch_interval=1.0)

    metrics = read_dataset(root, "metrics").sort("window_start", "key")
    alerts = read_dataset(root, "alerts")
    late = read_dataset(root, "metrics_late")
    stored = read_dataset(root, "telemetry")

    # every call stored once, masked; every window once per key; nothing late
    assert stored.height == sent and stored["call_id"].n_unique() == sent
    assert not stored["prompt"].str.contains("@example.com").any()
    assert not stored["completion"].drop_nulls().str.contains("@example.com").any()
    assert (stored["pii_total"] >= 1).all() and set(stored["text_masking"]) == {"masked"}
    assert late.height == 0
    for key in (HOT, CALM):
        m = metrics.filter(pl.col("key") == key)
        assert [window_index(t) for t in m["window_start"]] == list(range(len(PHASES)))
        assert m["events"].to_list() == [PER_WINDOW] * len(PHASES)
        assert m["reference_id"].null_count() == 2
    dlq = consume_all(kafka_bootstrap, f"{topic}.dlq")
    assert [m.value for m in dlq] == [b'{"call_id": "broken"}']

    # cost to the cent: 50 input and 5 output tokens at $15 / $50 per million
    stable = metrics.filter(pl.col("key") == HOT).row(2, named=True)
    assert abs(stable["cost_usd"] - PER_WINDOW * (50 * 15 + 5 * 50) / 1e6) < 1e-9
    slow = metrics.filter(pl.col("key") == HOT).row(6, named=True)
    assert abs(slow["cost_per_request_usd"] - (1000 * 15 + 100 * 50) / 1e6) < 1e-12
    assert slow["budget_exhausted_calls"] > 0 and slow["errors"] >= PER_WINDOW // 5

    # per rule: fires once where its condition starts, resolves once where it ends; the calm key raises nothing
    assert set(alerts["key"]) == {HOT}
    got: dict[str, dict[str, list[int]]] = {}
    for a in alerts.iter_rows(named=True):
        got.setdefault(a["rule"], {}).setdefault(a["state"], []).append(window_index(a["window_start"]))
    assert got == {rule: {"firing": [f], "resolved": [r]} for rule, (f, r) in EXPECTED.items()}, got
    psi = alerts.filter((pl.col("rule") == "feature_psi_high") & (pl.col("state") == "firing"))
    assert psi["detail"].to_list() == ["model_confidence"]

    # the alerts topic carries the same alerts, keyed by the window key
    on_topic = [(m.key, orjson.loads(m.value)) for m in consume_all(kafka_bootstrap, f"{topic}.alerts")]
    assert sorted((a["rule"], window_index(datetime.fromisoformat(a["window_start"])), a["state"]) for _, a in on_topic) == sorted(
        (a["rule"], window_index(a["window_start"]), a["state"]) for a in alerts.iter_rows(named=True)
    )
    assert {k for k, _ in on_topic} == {HOT.encode()}
    assert len(consume_all(kafka_bootstrap, f"{topic}.metrics")) == 2 * len(PHASES)
