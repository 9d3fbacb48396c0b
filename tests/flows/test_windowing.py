"""Bytewax windowing wiring: order independence within lateness, late counting, drift and alerts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bytewax.operators as op
import numpy as np
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, cluster_main, run_main
from polars.testing import assert_frame_equal

from driftline.clock import FakeClock
from driftline.config.monitoring import MonitoringConfig
from driftline.flows.windowing import window_monitor
from driftline.testing import InMemorySink
from driftline.testing.datasets import close_values

T0 = datetime(2026, 2, 1, 10, 0, tzinfo=timezone.utc)


def run_windows(frames: list[pl.DataFrame], cfg: MonitoringConfig, partitions: tuple[str, ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    flow = Dataflow("test_windows")
    out = window_monitor("mon", op.input("in", flow, TestingSource(frames)), cfg, clock=FakeClock(T0), partitions=partitions)
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


# ---------------------------------------------------------------------------------
# partitions, workers, backlogs and restarts
# ---------------------------------------------------------------------------------
class _FramesPartition(StatefulSourcePartition[pl.DataFrame, int]):
    def __init__(self, frames: list[pl.DataFrame], start: int) -> None:
        self.frames, self.i = frames, start

    def next_batch(self) -> list[pl.DataFrame]:
        if self.i >= len(self.frames):
            raise StopIteration()
        self.i += 1
        return [self.frames[self.i - 1]]

    def snapshot(self) -> int:
        return self.i


class PartitionedFrames(FixedPartitionedSource[pl.DataFrame, int]):
    """An in-memory source with one Bytewax partition per input partition (like the Kafka source)."""

    def __init__(self, parts: dict[str, list[pl.DataFrame]]) -> None:
        self.parts = parts

    def list_parts(self) -> list[str]:
        return sorted(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FramesPartition:
        return _FramesPartition(self.parts[for_part], resume_state or 0)


def partitioned(ev: pl.DataFrame, partitions: int, batch: int) -> dict[str, list[pl.DataFrame]]:
    """Events spread over input partitions (each in time order, as a producer writes them), cut in polls."""
    ev = ev.sort("event_time").with_columns(
        pl.lit("events").alias("src_topic"), (pl.int_range(pl.len()) % partitions).cast(pl.Int32).alias("src_partition")
    )
    return {str(p): batches(ev.filter(pl.col("src_partition") == p), batch) for p in range(partitions)}


def run_flow_frames(source: Any, cfg: MonitoringConfig, *, workers: int = 1, recovery: Path | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    flow = Dataflow("test_windows_parts")
    names = [f"events+{p}" for p in source.list_parts()]  # the input's partitions, as the flows pass the Kafka source's
    out = window_monitor("mon", op.input("in", flow, source), cfg, clock=FakeClock(T0), recovery=recovery is not None, partitions=names)
    sinks = {name: InMemorySink() for name in ("metrics", "alerts", "late")}
    for name, sink in sinks.items():
        op.output(f"{name}_out", getattr(out, name), sink)
    rc = RecoveryConfig(str(recovery)) if recovery is not None else None
    if workers == 1:
        run_main(flow, recovery_config=rc)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers, recovery_config=rc)
    return tuple(pl.concat(sinks[n].items) if sinks[n].items else pl.DataFrame() for n in ("metrics", "alerts", "late"))  # type: ignore[return-value]


def assert_same_rows(a: pl.DataFrame, b: pl.DataFrame, key: list[str]) -> None:
    """Equal rows by natural key; floats up to summation order (1e-9 relative)."""
    assert a.height == b.height
    drop = [c for c in ("fired_at",) if c in a.columns]
    a, b = a.drop(drop).sort(key), b.drop(drop).sort(key)
    assert_frame_equal(a, b, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def test_windows_equal_with_one_or_two_workers() -> None:
    """Same windows, late rows and alerts whatever the worker count and shard count."""
    rng = np.random.default_rng(21)
    ev = pl.concat([phase_frame(i, p, rng, n=240) for i, p in enumerate(PHASES)])
    stale = phase_frame(1, "stable", rng, n=30).with_columns(  # written 5 minutes late into partition 1
        pl.format("late{}", pl.col("event_id")).alias("event_id"), pl.lit("events").alias("src_topic"), pl.lit(1, pl.Int32).alias("src_partition")
    )
    parts = partitioned(ev, 3, 97)
    parts["1"].insert(len(parts["1"]) // 2, stale)
    cfg = MonitoringConfig(drift={"warmup_windows": 3})
    one = run_flow_frames(PartitionedFrames(parts), cfg)
    two = run_flow_frames(PartitionedFrames(parts), cfg, workers=2)
    few = run_flow_frames(PartitionedFrames(parts), cfg.model_copy(update={"window_shards": 3}), workers=2)
    metrics, alerts, late = one
    assert metrics["events"].sum() + late["late_events"].sum() == ev.height + stale.height
    assert late["late_events"].sum() == stale.height and set(late["window_start"]) == {T0 + timedelta(minutes=1)}
    check_alert_scenario(metrics, alerts, EXPECTED)
    for other in (two, few):
        assert_same_rows(one[0].drop("drift"), other[0].drop("drift"), ["window_start", "key"])
        assert_same_rows(one[1], other[1], ["rule", "key", "window_start", "state"])
        assert_same_rows(one[2], other[2], ["window_start", "key", "first_id"])


def test_backlog_of_three_partitions_gives_the_live_windows() -> None:
    """30 minutes of events on 3 partitions: read partition after partition (a backlog
    where one partition is drained before the others deliver anything) or interleaved in
    time order (live), the windows are the same and nothing is late.  The input's
    partitions are known (as the flows know the Kafka source's), so the first one cannot
    close windows the others still hold."""
    rng = np.random.default_rng(22)
    ev = events(9000, 30, rng)
    parts = partitioned(ev, 3, 1000)
    live = [f for trio in zip(*(parts[p] for p in sorted(parts))) for f in trio]
    backlog = [f for p in sorted(parts) for f in parts[p]]  # partition 0 first: 30 minutes ahead of the others
    cfg = MonitoringConfig(allowed_lateness_seconds=30)
    names = tuple(f"events+{p}" for p in sorted(parts))
    m_live, _, late_live = run_windows(live, cfg, names)
    m_backlog, _, late_backlog = run_windows(backlog, cfg, names)
    assert late_live.height == 0 and late_backlog.height == 0
    assert m_live["events"].sum() == ev.height
    assert_same_rows(m_live.drop("drift"), m_backlog.drop("drift"), ["window_start", "key"])


def test_a_window_open_at_the_end_of_a_run_continues_in_the_next(tmp_path: Path) -> None:
    """Two runs on one recovery folder, split inside a window: the first keeps its open
    windows in the snapshot, the second finishes them; rows equal a single run's."""
    rng = np.random.default_rng(23)
    ev = pl.concat([phase_frame(i, p, rng, n=200) for i, p in enumerate(PHASES)])
    parts = partitioned(ev, 2, 50)
    cfg = MonitoringConfig(drift={"warmup_windows": 3})
    whole = run_flow_frames(PartitionedFrames(parts), cfg)
    rec = tmp_path / "recovery"
    rec.mkdir()
    init_db_dir(rec, 1)
    cut = {p: len(f) // 2 + 1 for p, f in parts.items()}  # 6.5 minutes of 13: inside window 6
    first = run_flow_frames(PartitionedFrames({p: f[: cut[p]] for p, f in parts.items()}), cfg, recovery=rec)
    assert first[0]["window_start"].max() < T0 + timedelta(minutes=6)  # the open window was not emitted
    second = run_flow_frames(PartitionedFrames(parts), cfg.model_copy(update={"end_of_input": "close"}), recovery=rec)
    both = [pl.concat([a, b], how="vertical") if a.height and b.height else (a if a.height else b) for a, b in zip(first, second)]
    assert_same_rows(whole[0], both[0], ["window_start", "key"])
    assert_same_rows(whole[1], both[1], ["rule", "key", "window_start", "state"])
    assert both[2].height == whole[2].height == 0


def test_after_a_closing_end_of_input_later_events_of_those_windows_are_late(tmp_path: Path) -> None:
    """``end_of_input: close`` declares the input complete: a later run counts the rest of
    the windows it emitted as late instead of emitting them a second time."""
    rng = np.random.default_rng(24)
    ev = pl.concat([phase_frame(i, "stable", rng, n=100) for i in range(8)])
    parts = partitioned(ev, 2, 40)
    cfg = MonitoringConfig(end_of_input="close")
    rec = tmp_path / "recovery"
    rec.mkdir()
    init_db_dir(rec, 1)
    cut = {p: len(f) // 2 + 1 for p, f in parts.items()}
    first = run_flow_frames(PartitionedFrames({p: f[: cut[p]] for p, f in parts.items()}), cfg, recovery=rec)
    second = run_flow_frames(PartitionedFrames(parts), cfg, recovery=rec)
    metrics = pl.concat([first[0], second[0]])
    assert metrics.select("window_start", "key").is_duplicated().sum() == 0
    late = second[2]
    assert late.height and set(late["window_start"]) == {first[0]["window_start"].max()}
    assert metrics["events"].sum() + late["late_events"].sum() == ev.height


def scored_rows(n: int = 3000) -> pl.DataFrame:
    """The enrich flow's scored rows (the windows' input) for ``n`` synthetic events, run in memory."""
    import tempfile

    from driftline.config import load_config
    from driftline.flows.enrich import EnrichIO, build_enrich_flow
    from driftline.producer import SyntheticProducer
    from driftline.testing import micro_batch_source, raw_batches

    payloads = [e.payload for e in SyntheticProducer(7, pii_rate=0.2, invalid_rate=0.02).events(n)]
    cfg = load_config(None, env={"DRIFTLINE__SINKS__ROOT": tempfile.mkdtemp()})
    enriched = InMemorySink()
    io = EnrichIO(micro_batch_source(raw_batches(payloads, batch_size=500, timestamp_ms=int(T0.timestamp() * 1000))), InMemorySink(), frames={"enriched": enriched})
    run_main(build_enrich_flow(cfg, io=io, clock=FakeClock(T0), parquet=False))
    return pl.concat([f for f in enriched.items if f.height], how="vertical")


def plain(value: Any) -> Any:
    """An accumulator's state as dicts, lists, tuples and scalars (slots dataclasses by field, arrays as lists)."""
    if hasattr(type(value), "__slots__") and not isinstance(value, (str, bytes)):
        return {n: plain(getattr(value, n)) for n in type(value).__slots__}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def test_the_window_columns_alone_give_the_windows_of_the_whole_scored_rows() -> None:
    from driftline.operators.aggregate import slice_frame
    from driftline.operators.aggregate.accumulator import window_input_columns

    cfg = MonitoringConfig()
    rows = scored_rows()
    keep = window_input_columns(cfg)
    cut = rows.select([c for c in rows.columns if c in keep])
    assert cut.width < rows.width / 2, f"the cut keeps {cut.width} of {rows.width} columns"
    assert {"event_time", "model_cost_usd", "guard_decision", "f_lang", "source"} <= set(cut.columns)

    def slices(frame: pl.DataFrame) -> dict[tuple[Any, ...], Any]:
        # every accumulator whole (counts, sums, sketches, drift features' values), by its slice's coordinates
        return {(s.key, s.pane, s.first_window, s.first_id, s.max_time): s.acc for s in slice_frame(frame, cfg)}

    def differing(a: dict[tuple[Any, ...], Any], b: dict[tuple[Any, ...], Any]) -> list[tuple[Any, ...]]:
        # the slices whose accumulators differ; floats to 1e-9 relative (1e-12 absolute), since Polars
        # may sum a group's floats in another order when its threads split the frame otherwise
        return [k for k in a.keys() | b.keys() if k not in a or k not in b or not close_values(plain(a[k]), plain(b[k]), floor=1e-3, strict_types=True)]

    whole = slices(rows)
    assert whole and sum(a.events for a in whole.values()) == rows.height
    assert differing(whole, slices(cut)) == []
    assert differing(whole, slices(rows.drop("f_lang")))  # the comparison sees a drift feature's column go


def test_a_registered_window_sum_keeps_every_column_its_expression_reads() -> None:
    from driftline.operators.aggregate.accumulator import window_input_columns
    from driftline.operators.aggregate.columns import WINDOW_COLUMNS, register_window_column

    register_window_column("test_weighted", pl.Float64, {"test_weighted": ("test_a", lambda: pl.col("test_a") * pl.col("test_b"))}, lambda s, _e: s.get("test_weighted"))
    try:
        assert {"test_a", "test_b"} <= window_input_columns(MonitoringConfig())
    finally:
        del WINDOW_COLUMNS["test_weighted"]
