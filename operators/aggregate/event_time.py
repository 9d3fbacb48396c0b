"""Event time per input partition: which rows are late, and when a window may close.

Two pieces, both plain logic (the Bytewax steps around them are in
:mod:`driftline.operators.aggregate.windows`):

- :class:`PartitionClock` owns one input partition (Kafka topic-partition).  It reads the
  partition's rows in offset order and keeps the partition's *frontier*, the newest event
  time seen.  A row is **late** for a window when that window ended at or before the
  frontier *before the row* minus ``allowed_lateness_seconds``.  The decision depends on
  the partition's own rows only, never on how partitions interleave, how micro-batches
  are cut or what the system clock says, so a replay after a crash, a drained backlog and
  a live run make the same decisions.  Late rows are summed per window, key and the pane
  the frontier was in when they arrived; a group is emitted once the frontier has left
  that pane (no row can join it any more), so a replay rebuilds exactly the same
  ``metrics_late`` rows.
- :class:`Watermark` combines the frontiers of every partition into the watermark of a
  window shard: a window closes when every partition that holds data (or is expected)
  has passed its end plus the lateness.  Only idleness uses system time: a partition
  that delivered nothing for ``idle_partition_timeout_seconds`` *in this run* stops
  holding windows open, and when all are idle the watermark advances with system time
  from the newest event seen.  Idle time is counted from when this run first saw the
  partition, never across a restart, so an outage never makes replayed events late.

>>> import polars as pl
>>> from datetime import datetime, timezone
>>> from driftline.config.monitoring import MonitoringConfig
>>> cfg = MonitoringConfig(allowed_lateness_seconds=10)  # one-minute windows
>>> t = lambda s: datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc) + timedelta(seconds=s)
>>> clock = PartitionClock(cfg)
>>> rows = pl.DataFrame({"event_id": ["a", "b", "c"], "event_time": [t(5), t(100), t(2)], "source": ["s"] * 3, "model_name": ["m"] * 3})
>>> [(s.max_time.minute, s.acc.events) for s in clock.on_frame(rows)]  # 'c' came after 100 s: minute 0 had ended 40 s before, minus 10 s
[(0, 1), (1, 1)]
>>> [(late.key, late.first_id, late.acc.events) for late in clock.flush(everything=True)]
[(('s', 'm'), 'c', 1)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from driftline.config.monitoring import DriftFeature, MonitoringConfig
from driftline.operators.aggregate.accumulator import FIRST, PANE, TIME_MS, Slice, WindowAccumulator, WindowGeometry, prepare, slices_of, summaries

WINDOW, QUANTUM = "__w", "__q"


@dataclass(slots=True)
class LateGroup:
    """Late rows of one window and key that arrived while the frontier was in one pane."""

    acc: WindowAccumulator
    first_id: str | None


@dataclass(slots=True)
class PartitionState:
    """Snapshot of one input partition: its frontier and the late groups still open."""

    frontier_ms: int | None = None
    late: dict[tuple[int, tuple[str, ...], int], LateGroup] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LateSlice:
    """Late rows counted against one window (a ``metrics_late`` row)."""

    window_id: int
    key: tuple[str, ...]
    first_id: str | None
    acc: WindowAccumulator


class PartitionClock:
    """Frontier and late rows of one input partition (rows must come in offset order)."""

    def __init__(self, cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None, state: PartitionState | None = None) -> None:
        self.cfg = cfg
        self.features = features
        self.geo = WindowGeometry.of(cfg)
        self.state = state or PartitionState()

    def on_frame(self, frame: pl.DataFrame) -> list[Slice]:
        """Advance over ``frame`` (this partition's next rows); return its on-time slices.

        Late rows are added to the open late groups (see :meth:`flush`).
        """
        if frame.height == 0 or self.cfg.columns.event_time not in frame.columns:
            return []
        df, key_cols = prepare(frame, self.cfg)
        if df.height == 0:
            return []
        g, st = self.geo, self.state
        before = pl.col(TIME_MS).cum_max().shift(1)
        if st.frontier_ms is not None:
            before = pl.max_horizontal(before, pl.lit(st.frontier_ms, pl.Int64))
        k = g.panes_per_window
        earliest = pl.col(PANE) - (k - 1)
        # the first window that had not ended at the frontier before the row, minus the lateness
        open_from = (before - g.lateness_ms - g.origin_ms - g.length_ms) // g.pane_ms + 1
        df = df.with_columns(
            pl.max_horizontal(earliest, open_from).alias(FIRST),
            ((before - g.origin_ms) // g.pane_ms).alias(QUANTUM),
        )
        newest = int(df.get_column(TIME_MS).max())  # type: ignore[arg-type]
        st.frontier_ms = newest if st.frontier_ms is None else max(st.frontier_ms, newest)
        late_mask = pl.col(FIRST) > earliest
        if df.select(late_mask.any()).item():
            self._add_late(df.filter(late_mask), key_cols)
            df = df.filter(pl.col(FIRST) <= pl.col(PANE))
        return slices_of(df, key_cols, self.cfg, self.features) if df.height else []  # QUANTUM is not one of slices_of's columns

    def _add_late(self, late: pl.DataFrame, key_cols: list[str]) -> None:
        k = self.geo.panes_per_window
        parts = [late.filter(pl.col(PANE) - j < pl.col(FIRST)).with_columns((pl.col(PANE) - j).alias(WINDOW)) for j in range(k)]
        rows = pl.concat([p for p in parts if p.height]) if k > 1 else parts[0]
        for keys, first_id, acc in summaries(rows, [*key_cols, WINDOW, QUANTUM], self.cfg, self.features):
            key = tuple(str(v) for v in keys[: len(key_cols)])
            gk = (int(keys[-2]), key, int(keys[-1]))
            have = self.state.late.get(gk)
            if have is None:
                self.state.late[gk] = LateGroup(acc, first_id)
            else:
                have.acc.merge(acc)
                if first_id is not None and (have.first_id is None or first_id < have.first_id):
                    have.first_id = first_id

    def flush(self, *, everything: bool = False) -> list[LateSlice]:
        """Late groups no row can join any more (the frontier left their pane), or all of them."""
        st = self.state
        if not st.late:
            return []
        now_q = None if st.frontier_ms is None else self.geo.pane_of(st.frontier_ms)
        done = sorted(gk for gk in st.late if everything or now_q is None or gk[2] < now_q)
        out = []
        for gk in done:
            grp = st.late.pop(gk)
            out.append(LateSlice(gk[0], gk[1], grp.first_id, grp.acc))
        return out


@dataclass(slots=True)
class Watermark:
    """Closing watermark of one window shard from the frontiers of every input partition.

    ``frontiers`` and ``watermark_ms`` are snapshotted (see the shard state);
    ``last_seen`` is system time of this run only.  ``expected`` names partitions known
    to exist (the Kafka source's) that hold windows until they deliver or go idle.

    >>> from driftline.clock import FakeClock
    >>> clock = FakeClock()
    >>> wm = Watermark(lateness_ms=0, idle_ms=30_000, started=clock.now())
    >>> wm.observe("t+0", 1_000, clock.now()); wm.observe("t+1", 5_000, clock.now())
    >>> wm.advance(clock.now())  # the slower partition holds it
    1000
    >>> _ = clock.advance(31); wm.observe("t+1", 9_000, clock.now()); wm.advance(clock.now())  # t+0 idle: released
    9000
    """

    lateness_ms: int
    idle_ms: int
    started: datetime
    frontiers: dict[str, int] = field(default_factory=dict)
    watermark_ms: int | None = None
    expected: frozenset[str] = frozenset()
    last_seen: dict[str, datetime] = field(default_factory=dict)

    def observe(self, partition: str, frontier_ms: int, now: datetime) -> None:
        have = self.frontiers.get(partition)
        self.frontiers[partition] = frontier_ms if have is None else max(have, frontier_ms)
        self.last_seen[partition] = now

    def _idle(self, partition: str, now: datetime) -> bool:
        return now - self.last_seen.get(partition, self.started) >= timedelta(milliseconds=self.idle_ms)

    def advance(self, now: datetime) -> int | None:
        """Move the watermark (never backwards) and return it: windows ending at or before it close."""
        parts = set(self.frontiers) | self.expected
        active = [p for p in parts if not self._idle(p, now)]
        candidate: int | None = None
        if active:
            if all(p in self.frontiers for p in active):
                candidate = min(self.frontiers[p] for p in active) - self.lateness_ms
        elif self.frontiers:
            latest = max(self.last_seen.get(p, self.started) for p in parts)
            candidate = max(self.frontiers.values()) - self.lateness_ms + int((now - latest) / timedelta(milliseconds=1))
        if candidate is not None and (self.watermark_ms is None or candidate > self.watermark_ms):
            self.watermark_ms = candidate
        return self.watermark_ms


def partition_id(topic: Any, partition: Any) -> str:
    """The id of an input partition: ``topic+partition`` (``""`` for rows without Kafka coordinates)."""
    return "" if topic is None else f"{topic}+{partition}"


__all__ = ["LateGroup", "LateSlice", "PartitionClock", "PartitionState", "Watermark", "partition_id"]
