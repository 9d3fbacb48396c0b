"""The monitor flow on telemetry events: decoding, masking, windows, drift and alerts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
from bytewax.testing import run_main

from driftline.clock import FakeClock
from driftline.config import load_config
from driftline.flows.monitor import MonitorIO, build_monitor_flow
from driftline.operators.decode import RawRecord
from driftline.schemas import encode_single_object
from driftline.testing import InMemorySink, micro_batch_source, raw_batches

T0 = datetime(2026, 2, 1, 10, 0, tzinfo=timezone.utc)
PHASES = ["stable"] * 5 + ["drifted"] * 3 + ["failing"] * 3 + ["stable"] * 2
EXPECTED = {
    "feature_psi_high": (5, 8),  # confidence PSI (telemetry has no feature columns)
    "confidence_drift": (5, 8),
    "latency_p95_high": (8, 11),
    "latency_p99_high": (8, 11),
    "error_rate_high": (8, 11),
    "cost_per_request_high": (8, 11),
    "budget_exhausted": (8, 11),
}


def avro(obj: dict) -> bytes:
    return encode_single_object("model_call", obj)


def telemetry(rng: np.random.Generator, n: int = 200) -> list[bytes]:
    out: list[bytes] = []
    for minute, phase in enumerate(PHASES):
        drifted, failing = phase == "drifted", phase == "failing"
        for i, s in enumerate(np.sort(rng.uniform(0, 59.9, n))):
            err = None
            if i % (5 if failing else 200) == 0:
                err = "timeout"
            if failing and i == 1:
                err = "budget_exhausted"
            obj = {
                "call_id": f"c{minute:03d}-{i:04d}",
                "event_time": int((T0 + timedelta(minutes=minute, seconds=float(s))).timestamp() * 1000),
                "service": "checkout",
                "model": "gpt-x",
                "input_tokens": 1000 if failing else 50,
                "output_tokens": 100 if failing else 5,
                "latency_ms": float(rng.uniform(3000, 9000) if failing else rng.lognormal(5, 0.3)),
                "confidence": float(rng.uniform(0.45, 0.75) if drifted else rng.uniform(0.8, 0.95)),
                "error_class": err,
                "label": str(rng.choice(["pos", "neg"], p=[0.2, 0.8] if drifted else [0.7, 0.3])),
                "prompt": f"Customer jane.doe{i}@example.com asks about order {i}",
                "completion": "ok",
            }
            out.append(avro(obj) if i % 2 else json.dumps(obj).encode())
    return out


def test_monitor_flow_drift_alerts_and_masked_telemetry(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        env={},
        overrides={
            "sinks": {"root": str(tmp_path)},
            "monitoring": {"drift": {"warmup_windows": 3}},
            # $15 per million input and $50 per million output tokens
            "models": {"pricing": {"gpt-x": {"input_per_mtok": 15.0, "output_per_mtok": 50.0}}},
        },
    )
    payloads = telemetry(np.random.default_rng(5)) + [b"not json", b'{"call_id": "x"}']
    io = MonitorIO(
        micro_batch_source(raw_batches(payloads, topic="model-calls", batch_size=150)),
        InMemorySink(),
        frames={k: InMemorySink() for k in ("metrics", "alerts", "late", "telemetry")},
    )
    run_main(build_monitor_flow(cfg, io=io, clock=FakeClock(T0), parquet=False))
    metrics = pl.concat(io.frames["metrics"].items)
    alerts = pl.concat(io.frames["alerts"].items)
    stored = pl.concat(io.frames["telemetry"].items)
    assert metrics.height == len(PHASES) and metrics["events"].sum() == len(payloads) - 2
    assert not io.frames["late"].items or pl.concat(io.frames["late"].items).height == 0
    # refused payloads reach the dead-letter sink
    assert sum(len(b) for b in io.dead_letter.items) == 2
    # cost: 50 in + 5 out tokens at the stable price
    stable = metrics.row(0, named=True)
    assert abs(stable["cost_per_request_usd"] - (50 * 15 + 5 * 50) / 1e6) < 1e-12
    got: dict[str, dict[str, list[int]]] = {}
    for a in alerts.iter_rows(named=True):
        got.setdefault(a["rule"], {}).setdefault(a["state"], []).append(int((a["window_start"] - T0).total_seconds() // 60))
    assert got == {rule: {"firing": [f], "resolved": [r]} for rule, (f, r) in EXPECTED.items()}
    # no raw PII is stored: e-mails are masked, counts kept
    assert not stored["prompt"].str.contains("@example.com").any()
    assert (stored["pii_total"] >= 1).all()
    assert set(stored["text_masking"]) == {"masked"}


def test_monitor_flow_writes_parquet_datasets(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"sinks": {"root": str(tmp_path)}})
    payloads = telemetry(np.random.default_rng(6), n=20)[:100]
    io = MonitorIO(micro_batch_source(raw_batches(payloads, topic="model-calls", batch_size=50)), InMemorySink())
    run_main(build_monitor_flow(cfg, io=io, clock=FakeClock(T0)))
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*.parquet")}
    assert {"telemetry", "metrics"} <= written
    tel = pl.read_parquet(next((tmp_path / "telemetry").rglob("*.parquet")))
    assert not tel["prompt"].str.contains("@example.com").any()


def test_dead_letter_masking_covers_telemetry(tmp_path: Path) -> None:
    """With privacy.mask_dead_letter on, refused telemetry reaches the dead-letter sink
    masked, with its original key; off, it keeps the producer's bytes."""
    bad = b'{"call_id": "x", "prompt": "mail jane.doe@example.com"}'
    for masked in (True, False):
        cfg = load_config(None, env={}, overrides={"sinks": {"root": str(tmp_path)}, "privacy": {"mask_dead_letter": masked}})
        batches = [[RawRecord(bad, "model-calls", 0, 0, 0, key=b"k")]]
        io = MonitorIO(micro_batch_source(batches), InMemorySink())
        run_main(build_monitor_flow(cfg, io=io, clock=FakeClock(T0), parquet=False))
        ((key, value, _headers),) = [r for batch in io.dead_letter.items for r in batch]
        assert key == b"k"
        assert (b"jane.doe@example.com" in value) is not masked
        assert (b"<EMAIL:" in value) is masked
