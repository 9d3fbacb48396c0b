"""The three stateful window steps, as Bytewax ``stateful_batch`` logics.

Each owns its state per Bytewax key, in a snapshot-able dataclass, and reads time
from an injected clock:

1. :class:`EventTimeLogic`, keyed by **input partition** (``topic+partition``): turns the
   partition's rows into on-time slices and late groups (:class:`~driftline.operators.
   aggregate.event_time.PartitionClock`), routes each slice to the shard of its window
   key and sends the partition's frontier (:class:`Progress`) to *every* shard, after
   the slices of the same rows.  State: :class:`~driftline.operators.aggregate.
   event_time.PartitionState`.
2. :class:`WindowShardLogic`, keyed by **shard** (``crc32(window key) % window_shards``):
   adds slices to their open windows, tracks every partition's frontier
   (:class:`~driftline.operators.aggregate.event_time.Watermark`) and emits each window
   and key once, when the watermark passes its end.  State: :class:`ShardState`.
3. :class:`MonitorLogic`, keyed by **window key** (``source=a|model=m``): turns closed
   windows, in window order, into metrics rows with drift columns and evaluates the
   alert rules.  State: :class:`MonitorKeyState`.

Why this is exact under replays and parallelism: a slice and the frontier of the same
rows travel from one event-time worker to one shard worker on one channel, in order, so
a window never closes before every on-time row of a partition reached it; lateness is
decided per partition from its rows alone; accumulators merge associatively.  So the
windows (and the alerts derived from them) depend on the input only, not on worker
counts, batch boundaries, partition interleaving or restarts.  The steps require each
partition's rows to arrive in offset order (every step before them keeps a partition's
rows on one key, in order).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import polars as pl
from bytewax.operators import StatefulBatchLogic

from driftline.clock import Clock
from driftline.config.monitoring import DriftFeature, MonitoringConfig
from driftline.operators.aggregate.accumulator import Slice, WindowAccumulator, WindowGeometry, window_bounds
from driftline.operators.aggregate.event_time import LateSlice, PartitionClock, PartitionState, Watermark
from driftline.operators.aggregate.rows import key_string, late_row, late_schema, metrics_row, metrics_schema, rows_frame
from driftline.operators.alerts import AlertEngine, AlertState, alerts_schema
from driftline.operators.drift import DriftMonitor, DriftState, PendingKS, ProfileFile, fill_ks_pvalues


@dataclass(frozen=True, slots=True)
class Progress:
    """An input partition's frontier (newest event time, epoch ms), sent to every shard."""

    partition: str
    frontier_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    """System time passes (the source's idle tick), so idle partitions can be released."""


TICK = Tick()
ShardItem = Union[Slice, Progress, Tick]


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """One window and key, complete."""

    window_id: int
    key: tuple[str, ...]
    acc: WindowAccumulator


def shard_keys(shards: int) -> list[str]:
    return [str(i) for i in range(shards)]


def shard_of(key: str, shards: int) -> str:
    """The shard of a window key string (stable across processes, unlike ``hash``)."""
    return str(zlib.crc32(key.encode()) % shards)


class EventTimeLogic(StatefulBatchLogic[tuple[str, pl.DataFrame], Any, PartitionState]):
    """Per input partition: on-time slices to their shards, frontiers to every shard, late groups out.

    Values are ``(partition id, frame)``; outputs are ``(shard, [items])`` pairs and
    :class:`~driftline.operators.aggregate.event_time.LateSlice` items.  With
    ``close_at_eof`` the late groups still open are emitted at the end of the input;
    otherwise they stay in the snapshot for the next run.
    """

    def __init__(self, cfg: MonitoringConfig, features: Sequence[DriftFeature] | None, close_at_eof: bool, state: PartitionState | None) -> None:
        self.cfg = cfg
        self.shards = cfg.window_shards
        self.close_at_eof = close_at_eof
        self.clock = PartitionClock(cfg, features, state)

    def on_batch(self, values: list[tuple[str, pl.DataFrame]]) -> tuple[Iterable[Any], bool]:
        out: list[Any] = []
        for partition, frame in values:
            routed: dict[str, list[ShardItem]] = {k: [] for k in shard_keys(self.shards)}
            for s in self.clock.on_frame(frame):
                routed[shard_of(key_string(self.cfg, s.key), self.shards)].append(s)
            frontier = self.clock.state.frontier_ms
            if frontier is None:
                continue
            for k, items in routed.items():
                items.append(Progress(partition, frontier))
                out.append((k, items))
        out.extend(self.clock.flush())
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        return (self.clock.flush(everything=True) if self.close_at_eof else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> PartitionState:
        return copy.deepcopy(self.clock.state)


@dataclass(slots=True)
class ShardState:
    """Snapshot of one window shard: partition frontiers, the watermark, open windows."""

    shards: int
    frontiers: dict[str, int] = field(default_factory=dict)
    watermark_ms: int | None = None
    windows: dict[int, dict[tuple[str, ...], WindowAccumulator]] = field(default_factory=dict)


class WindowShardLogic(StatefulBatchLogic[list[ShardItem], Union[ClosedWindow, LateSlice], ShardState]):
    """Open windows of the keys of one shard; closes them when every partition passed their end.

    ``expected`` partitions (the input's, when known) hold windows until they deliver or
    go idle, so a partition whose first poll is slow does not find its windows closed.
    """

    def __init__(
        self, step_id: str, cfg: MonitoringConfig, clock: Clock, close_at_eof: bool, expected: frozenset[str], state: ShardState | None
    ) -> None:
        if state is not None and state.shards != cfg.window_shards:
            raise ValueError(
                f"step {step_id!r}: the recovery folder holds windows sharded {state.shards} ways but monitoring.window_shards "
                f"is {cfg.window_shards}; set it back to {state.shards} or start with a fresh recovery folder"
            )
        self.cfg = cfg
        self.geo = WindowGeometry.of(cfg)
        self.clock = clock
        self.close_at_eof = close_at_eof
        self.state = state or ShardState(shards=cfg.window_shards)
        self.wm = Watermark(
            lateness_ms=self.geo.lateness_ms,
            idle_ms=round(cfg.idle_partition_timeout_seconds * 1000),
            started=clock.now(),
            frontiers=self.state.frontiers,
            watermark_ms=self.state.watermark_ms,
            expected=expected,
        )

    def _add(self, s: Slice, now_wm: int | None, out: list[Any]) -> None:
        for w in range(s.first_window, s.pane + 1):
            if now_wm is not None and self.geo.end_ms(w) <= now_wm:
                out.append(LateSlice(w, s.key, s.first_id, s.acc))  # its window closed: a partition was idle
                continue
            keys = self.state.windows.setdefault(w, {})
            have = keys.get(s.key)
            if have is None:  # copy: a sliding pane feeds several windows
                keys[s.key] = s.acc.copy() if s.pane > s.first_window else s.acc
            else:
                have.merge(s.acc)

    def _close(self, upto: int | None) -> list[Any]:
        out: list[Any] = []
        for w in sorted(self.state.windows):
            if upto is not None and self.geo.end_ms(w) > upto:
                break
            keys = self.state.windows.pop(w)
            out.extend(ClosedWindow(w, k, keys[k]) for k in sorted(keys))
        return out

    def on_batch(self, values: list[list[ShardItem]]) -> tuple[Iterable[Any], bool]:
        now = self.clock.now()
        out: list[Any] = []
        for items in values:
            for item in items:
                if isinstance(item, Slice):
                    self._add(item, self.wm.watermark_ms, out)
                elif isinstance(item, Progress):
                    self.wm.observe(item.partition, item.frontier_ms, now)
        wm = self.wm.advance(now)
        self.state.watermark_ms = wm
        if wm is not None:
            out.extend(self._close(wm))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        if not self.close_at_eof or not self.state.windows:
            return [], StatefulBatchLogic.RETAIN
        # the input is complete: what arrives later for these windows (a next run) is late
        last_end = self.geo.end_ms(max(self.state.windows))
        self.wm.watermark_ms = self.state.watermark_ms = max(self.wm.watermark_ms or last_end, last_end)
        return self._close(None), StatefulBatchLogic.RETAIN

    def snapshot(self) -> ShardState:
        return copy.deepcopy(self.state)


@dataclass(slots=True)
class MonitorKeyState:
    """Snapshot of one window key: its drift reference (or warm-up) and alert states."""

    drift: DriftState = field(default_factory=DriftState)
    alerts: AlertState = field(default_factory=AlertState)


class MonitorLogic(StatefulBatchLogic[ClosedWindow, tuple[pl.DataFrame, pl.DataFrame], MonitorKeyState]):
    """Metrics rows, drift and alerts of one window key, window after window."""

    def __init__(
        self, cfg: MonitoringConfig, features: Sequence[DriftFeature], profile: ProfileFile | None, clock: Clock, state: MonitorKeyState | None
    ) -> None:
        self.cfg = cfg
        self.state = state or MonitorKeyState()
        self.drift = DriftMonitor(cfg, features, self.state.drift, profile_file=profile)
        self.alerts = AlertEngine(cfg, clock, self.state.alerts)
        self.m_schema = metrics_schema(cfg)
        self.a_schema = alerts_schema(cfg)
        self.no_alerts = rows_frame([], self.a_schema)  # most windows raise none; the empty frame is dropped downstream

    def on_batch(self, values: list[ClosedWindow]) -> tuple[Iterable[tuple[pl.DataFrame, pl.DataFrame]], bool]:
        rows, alerts = [], []
        pending: list[PendingKS] = []  # the KS p-values of every window, one scipy call below
        for cw in sorted(values, key=lambda c: c.window_id):
            start, end = window_bounds(self.cfg, cw.window_id)
            rows.append(self.drift.on_window(metrics_row(cw.acc, start, end, cw.key, self.cfg), cw.acc, pending))
        fill_ks_pvalues(pending)
        for row in rows:  # in window order, as the rules' states advance
            alerts.extend(self.alerts.evaluate(row))
        return [(rows_frame(rows, self.m_schema), rows_frame(alerts, self.a_schema) if alerts else self.no_alerts)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> MonitorKeyState:
        return copy.deepcopy(self.state)


def late_frame(late: LateSlice, cfg: MonitoringConfig, schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """The ``metrics_late`` row of one late group."""
    start, end = window_bounds(cfg, late.window_id)
    return rows_frame([late_row(late.acc, start, end, late.key, late.first_id, cfg)], schema or late_schema(cfg))


__all__ = [
    "TICK",
    "ClosedWindow",
    "EventTimeLogic",
    "MonitorKeyState",
    "MonitorLogic",
    "Progress",
    "ShardState",
    "Tick",
    "WindowShardLogic",
    "late_frame",
    "shard_keys",
    "shard_of",
]
