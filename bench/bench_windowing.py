"""Per-event cost of window aggregation (prints its figures; not run by pytest).

    .venv/bin/python bench/bench_windowing.py [events]

1. ``slice_frame`` alone over 1,000-row micro-batches (the vectorized pre-aggregation);
2. the whole Bytewax wiring (event time per partition, window shards, drift, alerts) over the same data;
3. the quantile sketch's worst relative error on 1,000,000 latencies.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
import numpy as np
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from driftline.clock import FakeClock
from driftline.config.monitoring import MonitoringConfig
from driftline.flows.windowing import window_monitor
from driftline.operators.aggregate import QuantileSketch, slice_frame
from driftline.testing import InMemorySink

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def frames(n: int, batch: int = 1000) -> list[pl.DataFrame]:
    rng = np.random.default_rng(0)
    secs = np.sort(rng.uniform(0, n / 200, n))  # 200 events/s -> 12,000 per one-minute window
    df = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": [T0 + timedelta(seconds=float(s)) for s in secs],
            "source": rng.choice(["reviews", "tickets", "chat"], n).tolist(),
            "model_name": rng.choice(["local", "gpt-x"], n).tolist(),
            "model_latency_ms": rng.lognormal(5, 0.5, n),
            "model_confidence": rng.uniform(0.5, 1, n),
            "model_label": rng.choice(["pos", "neg", "neu"], n).tolist(),
            "model_tier": rng.choice(["primary", "fallback"], n).tolist(),
            "model_error_class": [None] * n,
            "model_cost_usd": rng.uniform(0, 0.01, n),
            "model_input_tokens": rng.integers(10, 500, n),
            "model_output_tokens": rng.integers(1, 50, n),
            "model_cached": rng.uniform(0, 1, n) < 0.2,
            "pii_total": rng.integers(0, 2, n),
            "inj_risk_score": rng.uniform(0, 1, n),
            "f_chars": rng.integers(10, 2000, n).astype(float),
            "f_words": rng.integers(2, 400, n).astype(float),
            "f_sentiment_lex": rng.uniform(-1, 1, n),
            "f_lang": rng.choice(["en", "de", "fr"], n).tolist(),
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("ms"))
    return [df.slice(i, batch) for i in range(0, n, batch)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    cfg = MonitoringConfig()
    fs = frames(n)
    t = time.perf_counter()
    for f in fs:
        slice_frame(f, cfg)
    dt = time.perf_counter() - t
    print(f"slice_frame: {n} events in {dt:.3f} s = {dt / n * 1e6:.2f} us/event ({n / dt:,.0f} events/s)")

    flow = Dataflow("bench")
    out = window_monitor("mon", op.input("in", flow, TestingSource(fs)), cfg, clock=FakeClock(T0))
    sink = InMemorySink()
    op.output("m", out.metrics, sink)
    t = time.perf_counter()
    run_main(flow)
    dt = time.perf_counter() - t
    rows = sum(f.height for f in sink.items)
    print(f"window_monitor flow: {n} events -> {rows} metric rows in {dt:.3f} s = {dt / n * 1e6:.2f} us/event ({n / dt:,.0f} events/s)")

    rng = np.random.default_rng(1)
    v = rng.lognormal(5, 1.5, 1_000_000)
    s = QuantileSketch()
    t = time.perf_counter()
    for chunk in np.array_split(v, 1000):
        s.add(chunk)
    dt = time.perf_counter() - t
    worst = max(abs(s.quantile(q) - np.quantile(v, q, method="lower")) / np.quantile(v, q, method="lower") for q in (0.5, 0.9, 0.95, 0.99, 0.999))
    print(f"sketch: 1e6 values in {dt:.3f} s, {len(s.pos)} buckets, worst relative error {worst:.4%} (bound 1%)")


if __name__ == "__main__":
    main()
