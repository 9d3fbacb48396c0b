"""Bytewax windowing wiring: order independence within lateness, late counting, drift and alerts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import bytewax.operators as op
import numpy as np
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from polars.testing import assert_frame_equal

from driftline.clock import FakeClock
from driftline.config.monitoring import MonitoringConfig
from driftline.flows.windowing import window_monitor
from driftline.testing import InMemorySink

T0 = datetime(2026, 2, 1, 10, 0, tzinfo=timezone.utc)


def run_windows(frames: list[pl.DataFrame], cfg: MonitoringConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    flow = Dataflow("test_windows")
    out = window_monitor("mon", op.input("in", flow, TestingSource(frames)), cfg, clock=FakeClock(T0))
    sinks = {name: InMemorySink() for name in ("metrics", "alerts", "late")}
    for name, sink in sinks.items():
        op.output(f"{name}_out", getattr(out, name), sink)
    run_main(flow)
    got = []
    for name in ("metrics", "alerts", "late"):
        items = sinks[name].items
        got.append(pl.concat(items) if items else pl.DataFrame())
    return got[0], got[1], got[2]


def events(n: int, minutes: float, rng: np.random.Generator, start: datetime = T0) -> pl.DataFrame:
    secs = rng.uniform(0, minutes * 60, n)
    return pl.DataFrame(
        {
            "event_id": [f"e{i:06d}" for i in range(n)],
            "event_time": [start + timedelta(seconds=float(s)) for s in secs],
            "source": rng.choice(["reviews", "tickets"], n).tolist(),
            "model_name": ["local"] * n,
            "model_latency_ms": rng.lognormal(5, 0.4, n),
            "model_confidence": rng.uniform(0.7, 0.95, n),
            "model_label": rng.choice(["pos", "neg"], n).tolist(),
            "model_cost_usd": rng.uniform(0, 0.002, n),
            "f_chars": rng.integers(20, 300, n).astype(float),
            "f_lang": rng.choice(["en", "de"], n, p=[0.8, 0.2]).tolist(),
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("ms"))


def batches(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [frame.slice(i, size) for i in range(0, frame.height, size)]


def test_windows_equal_in_order_or_shuffled_within_lateness() -> None:
    rng = np.random.default_rng(7)
    cfg = MonitoringConfig(allowed_lateness_seconds=30)
    ev = events(3000, 6, rng)
    in_order = ev.sort("event_time")
    jitter = pl.Series(rng.uniform(0, 25_000, ev.height)).cast(pl.Int64)
    shuffled = ev.with_columns((pl.col("event_time").dt.epoch("ms") + jitter).alias("__arrive")).sort("__arrive").drop("__arrive")
    assert not shuffled["event_time"].is_sorted()
    m1, _, late1 = run_windows(batches(in_order, 97), cfg)
    m2, _, late2 = run_windows(batches(shuffled, 61), cfg)
    assert late1.height == 0 and late2.height == 0
    assert m1["events"].sum() == ev.height
    # the per-window rows are the same whatever the order and batch boundaries
    cols = [c for c in m1.columns if c not in ("drift",)]
    assert_frame_equal(m1.sort("window_start", "key").select(cols), m2.sort("window_start", "key").select(cols), check_exact=False, rel_tol=1e-12)
    assert m1.height == 2 * 6  # two sources x six one-minute windows


def test_late_events_beyond_lateness_are_counted_not_lost() -> None:
    rng = np.random.default_rng(8)
    cfg = MonitoringConfig(allowed_lateness_seconds=10)
    ev = events(1200, 5, rng).sort("event_time")
    stale = events(40, 0.5, rng, start=T0).with_columns(pl.format("late{}", pl.col("event_id")).alias("event_id"))  # minute 0, sent at the end
    metrics, _, late = run_windows([*batches(ev, 100), stale], cfg)
    assert metrics["events"].sum() + late["late_events"].sum() == ev.height + stale.height
    assert late["late_events"].sum() == stale.height
    assert set(late["window_start"].to_list()) == {T0}
    assert late["first_id"].str.starts_with("late").all()


def test_sliding_windows_count_each_event_in_each_window() -> None:
    rng = np.random.default_rng(9)
    cfg = MonitoringConfig(window_seconds=60, slide_seconds=20, key_dims=["model"])
    ev = events(600, 3, rng).sort("event_time")
    metrics, _, _ = run_windows(batches(ev, 50), cfg)
    assert metrics["events"].sum() == 3 * ev.height  # every event lies in three windows
    for r in metrics.iter_rows(named=True):
        n = ev.filter((pl.col("event_time") >= r["window_start"]) & (pl.col("event_time") < r["window_end"])).height
        assert r["events"] == n


# ---------------------------------------------------------------------------------
# stable -> drifted -> slow/failing model -> recovered
# ---------------------------------------------------------------------------------
PHASES = ["stable"] * 5 + ["drifted"] * 3 + ["failing"] * 3 + ["stable"] * 2


def phase_frame(minute: int, phase: str, rng: np.random.Generator, n: int = 300) -> pl.DataFrame:
    start = T0 + timedelta(minutes=minute)
    t = [start + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, 59.9, n))]
    drifted, failing = phase == "drifted", phase == "failing"
    err = np.full(n, None, dtype=object)
    err[:: 200 if not failing else 5] = "timeout"
    if failing:
        err[1] = "budget_exhausted"
    return pl.DataFrame(
        {
            "event_id": [f"{minute:03d}-{i:04d}" for i in range(n)],
            "event_time": t,
            "source": ["reviews"] * n,
            "model_name": ["gpt-x"] * n,
            "model_latency_ms": rng.uniform(3000, 9000, n) if failing else rng.lognormal(5, 0.3, n),
            "model_error_class": err.tolist(),
            "model_confidence": rng.uniform(0.45, 0.75, n) if drifted else rng.uniform(0.8, 0.95, n),
            "model_label": rng.choice(["pos", "neg"], n, p=[0.2, 0.8] if drifted else [0.7, 0.3]).tolist(),
            "model_cost_usd": np.full(n, 0.02 if failing else 0.001),
            "model_tier": ["primary"] * n,
            "f_chars": rng.integers(300, 2000, n).astype(float) if drifted else rng.integers(20, 300, n).astype(float),
            "f_lang": rng.choice(["en", "de", "fr"], n, p=[0.2, 0.4, 0.4] if drifted else [0.9, 0.1, 0.0]).tolist(),
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("ms"))


EXPECTED = {  # rule -> (window index where it fires, window index where it resolves)
    "feature_psi_high": (5, 8),
    "confidence_drift": (5, 8),
    "latency_p95_high": (8, 11),
    "latency_p99_high": (8, 11),
    "error_rate_high": (8, 11),
    "cost_per_request_high": (8, 11),
    "budget_exhausted": (8, 11),
}


def check_alert_scenario(metrics: pl.DataFrame, alerts: pl.DataFrame, expected: dict[str, tuple[int, int]]) -> None:
    """Each rule fires once in the window its condition starts and resolves once when it ends."""
    assert metrics.height == len(PHASES)
    assert metrics["reference_id"].null_count() == 3  # warm-up windows
    got: dict[str, dict[str, list[int]]] = {}
    for a in alerts.iter_rows(named=True):
        idx = int((a["window_start"] - T0).total_seconds() // 60)
        got.setdefault(a["rule"], {}).setdefault(a["state"], []).append(idx)
    assert set(got) == set(expected), got
    for rule, (fire, resolve) in expected.items():
        assert got[rule] == {"firing": [fire], "resolved": [resolve]}, (rule, got[rule])


def test_each_rule_fires_once_where_its_condition_starts_and_resolves() -> None:
    rng = np.random.default_rng(11)
    cfg = MonitoringConfig(drift={"warmup_windows": 3})
    frames = [phase_frame(i, p, rng) for i, p in enumerate(PHASES)]
    micro: list[pl.DataFrame] = [b for f in frames for b in batches(f, 100)]
    metrics, alerts, late = run_windows(micro, cfg)
    assert late.height == 0
    check_alert_scenario(metrics, alerts, EXPECTED)
    drift_rows = metrics.filter(pl.col("window_start") == T0 + timedelta(minutes=5))
    feats = {d["feature"]: d for d in drift_rows["drift"][0]}
    assert feats["f_chars"]["psi_level"] == "significant" and feats["f_lang"]["js"] > 0.1
    assert drift_rows["confidence_drift_level"][0] == "significant"
