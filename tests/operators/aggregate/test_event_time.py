"""Event time per input partition: lateness, watermarks, idleness, restarts; the window shard logic."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from driftline.clock import FakeClock
from driftline.config.monitoring import MonitoringConfig
from driftline.operators.aggregate.accumulator import WindowGeometry
from driftline.operators.aggregate.event_time import LateSlice, PartitionClock, Watermark
from driftline.operators.aggregate.reference import ColumnScan, ordered_keys
from driftline.operators.aggregate.windows import ClosedWindow, EventTimeLogic, Progress, WindowShardLogic, shard_of

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def frame(seconds: list[float], ids: list[str] | None = None) -> pl.DataFrame:
    n = len(seconds)
    return pl.DataFrame(
        {
            "event_id": ids or [f"e{i:03d}" for i in range(n)],
            "event_time": [T0 + timedelta(seconds=s) for s in seconds],
            "source": ["s"] * n,
            "model_name": ["m"] * n,
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("ms"))


def test_lateness_is_decided_row_by_row_whatever_the_batch_cuts() -> None:
    """The same rows of one partition cut into different micro-batches give the same on-time
    and late counts, and the same late rows."""
    cfg = MonitoringConfig(allowed_lateness_seconds=10)
    rng = np.random.default_rng(0)
    secs = np.sort(rng.uniform(0, 300, 400))
    secs[::17] -= 45  # out of order beyond the lateness
    rows = frame(secs.tolist())
    results = []
    for cut in (1, 7, 50, 400):
        clock = PartitionClock(cfg)
        on_time = sum(s.acc.events for i in range(0, rows.height, cut) for s in clock.on_frame(rows.slice(i, cut)))
        late = clock.flush(everything=True)
        results.append((on_time, sorted((x.window_id, x.first_id, x.acc.events) for x in late)))
    assert all(r == results[0] for r in results)
    on_time, late = results[0]
    assert late and on_time + sum(n for _, _, n in late) == rows.height
    # an independent reading: late when the row's minute ended at or before the max seen so far minus 10 s
    seen, expect_late = -np.inf, 0
    for s in secs:
        expect_late += (s // 60 + 1) * 60 <= seen - 10
        seen = max(seen, s)
    assert sum(n for _, _, n in late) == expect_late


def test_late_groups_are_emitted_once_the_frontier_left_their_pane() -> None:
    cfg = MonitoringConfig(allowed_lateness_seconds=0)
    clock = PartitionClock(cfg)
    clock.on_frame(frame([70.0, 10.0]))  # 10 s is late for minute 0 (frontier in minute 1)
    assert clock.flush() == []  # more late rows of minute 0 could still come while the frontier is in minute 1
    clock.on_frame(frame([75.0, 20.0], ids=["x1", "x2"]))
    assert clock.flush() == []
    clock.on_frame(frame([130.0], ids=["y"]))  # the frontier moves to minute 2
    (late,) = clock.flush()
    assert (late.first_id, late.acc.events) == ("e001", 2)


def test_watermark_is_the_slowest_partition_and_idle_ones_are_released() -> None:
    clock = FakeClock(T0)
    wm = Watermark(lateness_ms=1000, idle_ms=30_000, started=clock.now(), expected=frozenset({"t+0", "t+1", "t+2"}))
    wm.observe("t+0", 50_000, clock.now())
    wm.observe("t+1", 20_000, clock.now())
    assert wm.advance(clock.now()) is None  # t+2 is expected and has delivered nothing yet
    wm.observe("t+2", 90_000, clock.now())
    assert wm.advance(clock.now()) == 19_000
    clock.advance(20)
    wm.observe("t+0", 60_000, clock.now())
    wm.observe("t+2", 95_000, clock.now())
    assert wm.advance(clock.now()) == 19_000  # t+1 not idle yet
    clock.advance(15)  # t+1 silent for 35 s: released
    wm.observe("t+0", 61_000, clock.now())
    wm.observe("t+2", 96_000, clock.now())
    assert wm.advance(clock.now()) == 60_000
    clock.advance(40)  # everything idle: system time moves the watermark from the newest event
    assert wm.advance(clock.now()) == 96_000 - 1000 + 40_000


def test_a_restart_after_an_outage_does_not_move_the_watermark() -> None:
    """The shard resumes with its frontiers; the hours the process was down count for nothing,
    so replayed rows are not late and the open window is not closed by system time."""
    cfg = MonitoringConfig(allowed_lateness_seconds=30, idle_partition_timeout_seconds=30)
    clock = FakeClock(T0)
    geo = WindowGeometry.of(cfg)
    shard = WindowShardLogic("w", cfg, clock, False, frozenset({"t+0", "t+1"}), None)
    t = geo.origin_ms + 3_000_000 * geo.pane_ms  # a window boundary
    for p, off in (("t+0", 10_000), ("t+1", 5_000)):
        out, _ = shard.on_batch([[Progress(p, t + off)]])
        assert not [o for o in out if isinstance(o, ClosedWindow)]
    state = pickle.loads(pickle.dumps(shard.snapshot()))
    clock.advance(6 * 3600)  # six hours of outage
    resumed = WindowShardLogic("w", cfg, clock, False, frozenset({"t+0", "t+1"}), state)
    out, _ = resumed.on_batch([[Progress("t+0", t + 15_000)]])
    assert resumed.wm.watermark_ms == state.watermark_ms  # t+1 still holds it: its idle time starts now
    clock.advance(31)
    out, _ = resumed.on_batch([[Progress("t+0", t + 20_000)]])
    assert resumed.wm.watermark_ms == t + 20_000 - 30_000  # released after 31 s of this run, not because of the outage


def test_a_changed_shard_count_is_refused_with_a_clear_message() -> None:
    cfg = MonitoringConfig(window_shards=8)
    state = WindowShardLogic("w", cfg, FakeClock(T0), False, frozenset(), None).snapshot()
    with pytest.raises(ValueError, match=r"step 'x.window_shards'.*sharded 8 ways.*window_shards is 4"):
        WindowShardLogic("x.window_shards", cfg.model_copy(update={"window_shards": 4}), FakeClock(T0), False, frozenset(), state)


def test_event_time_logic_routes_slices_to_their_shard_then_the_frontier_to_every_shard() -> None:
    cfg = MonitoringConfig(window_shards=4, key_dims=["source"])
    logic = EventTimeLogic(cfg, None, True, None)
    rows = frame([1.0, 2.0, 3.0]).with_columns(pl.Series("source", ["a", "b", "a"]))
    out, _ = logic.on_batch([("t+0", rows)])
    routed = dict(out)
    assert set(routed) == {"0", "1", "2", "3"}
    for shard, items in routed.items():
        assert isinstance(items[-1], Progress) and items[-1].partition == "t+0"
        for s in items[:-1]:
            assert shard_of(f"source={s.key[0]}", 4) == shard
    assert sum(s.acc.events for items in routed.values() for s in items[:-1]) == 3
    late, _ = logic.on_eof()
    assert late == []
    assert all(not isinstance(o, LateSlice) for o in out)


def test_column_scan_finds_exact_order_statistics_with_ties_signs_and_zeros() -> None:
    rng = np.random.default_rng(4)
    data = np.concatenate([np.zeros(3000), -np.ones(2000), rng.normal(0, 1e-3, 5000), rng.integers(-3, 4, 5000).astype(float), [-0.0] * 50])
    rng.shuffle(data)
    scan = ColumnScan(exact_limit=100, bins=10, grid_points=50)
    for part in np.array_split(data, 9):
        scan.add(part)
    passes = 1
    while scan.needs_pass():
        passes += 1
        for part in np.array_split(data, 9):
            scan.add(part)
        scan.end_pass()
    assert passes <= 18
    assert np.array_equal(scan.edges(), np.unique(np.quantile(data, np.linspace(0, 1, 11)[1:-1])))
    edges = scan.edges()
    assert np.array_equal(scan.bin_counts, np.bincount(np.searchsorted(edges, data, side="right"), minlength=edges.size + 1))
    tops, masses, _single = scan.leaf_arrays()
    assert masses.sum() == data.size and np.all(np.diff(tops) > 0)
    assert np.array_equal(np.searchsorted(np.sort(data), tops, side="right"), np.cumsum(masses).astype(int))  # exact ECDF at every leaf
    assert np.all(np.diff(ordered_keys(np.sort(data)).astype(np.float64)) >= 0)
