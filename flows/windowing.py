"""Event-time windows, drift and alerts as Bytewax steps, shared by both flows.

How it works:

1. ``slices``: each micro-batch (a Polars frame, or a :class:`MicroBatch` whose
   ``valid`` rows are used) is cut into per-key, per-pane
   :class:`~driftline.operators.aggregate.Slice` summaries with one vectorized pass
   (:func:`~driftline.operators.aggregate.slice_frame`).  A pane is the slide of a sliding
   window or the whole tumbling window, so every row of a slice belongs to the same
   windows.  Rows are never windowed one by one.
2. ``window``: Bytewax's :func:`bytewax.operators.windowing.window` with an
   :class:`~bytewax.operators.windowing.EventClock` (timestamp: the slice's newest event
   time; ``wait_for_system_duration``: ``monitoring.allowed_lateness_seconds``; the
   system time comes from the injected driftline clock) and a
   :class:`~bytewax.operators.windowing.TumblingWindower` or
   :class:`~bytewax.operators.windowing.SlidingWindower`.  All slices are routed to one
   key so the watermark is the stream's, not each key's; the window state is a dict of
   mergeable accumulators per key.
3. Bytewax's late output (slices older than the watermark) becomes ``metrics_late`` rows
   counted against the window they belong to.  The late rows themselves still reach the
   enriched/telemetry dataset, which is written before windowing.
4. ``monitor``: one stateful step turns each closed window into metrics rows, fills the
   drift columns (:class:`~driftline.operators.drift.DriftMonitor`) and evaluates the
   alert rules (:class:`~driftline.operators.alerts.AlertEngine`).

>>> from datetime import datetime, timezone
>>> import polars as pl
>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSource, run_main
>>> from driftline.config.monitoring import MonitoringConfig
>>> from driftline.testing import InMemorySink
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> frame = pl.DataFrame({"event_time": [t], "source": ["a"], "model_name": ["m"], "model_latency_ms": [120.0]})
>>> flow = Dataflow("doc")
>>> out = window_monitor("mon", op.input("in", flow, TestingSource([frame])), MonitoringConfig())
>>> sink = InMemorySink()
>>> op.output("metrics", out.metrics, sink)
>>> run_main(flow)
>>> sink.items[0].select("key", "events", "latency_p50_ms").row(0)
('source=a|model=m', 1, 120.0)
"""

from __future__ import annotations

import copy

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Stream, operator
from bytewax.operators.windowing import EventClock, SlidingWindower, TumblingWindower, WindowLogic, window
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from driftline.clock import Clock, SystemClock
from driftline.config.monitoring import DriftFeature, MonitoringConfig
from driftline.operators.aggregate import (
    Slice,
    WindowAccumulator,
    align_origin,
    late_row,
    late_schema,
    metrics_row,
    metrics_schema,
    rows_frame,
    slice_frame,
    window_bounds,
)
from driftline.operators.alerts import AlertEngine, AlertState, AlertWebhook, alerts_schema
from driftline.operators.batch import MicroBatch
from driftline.operators.drift import DriftMonitor, DriftState

ROUTE = "all"


class _MergeLogic(WindowLogic[Slice, dict[tuple[str, ...], WindowAccumulator], dict[tuple[str, ...], WindowAccumulator]]):
    """One window's state: a mergeable accumulator per key; emitted once at close."""

    def __init__(self, state: dict[tuple[str, ...], WindowAccumulator] | None) -> None:
        self.accs: dict[tuple[str, ...], WindowAccumulator] = state or {}

    def on_value(self, value: Slice) -> Iterable[dict[tuple[str, ...], WindowAccumulator]]:
        have = self.accs.get(value.key)
        if have is None:  # copy: with sliding windows one slice feeds several windows
            self.accs[value.key] = value.acc.copy()
        else:
            have.merge(value.acc)
        return ()

    def on_merge(self, original: _MergeLogic) -> Iterable[dict[tuple[str, ...], WindowAccumulator]]:
        for k, acc in original.accs.items():
            self.on_value(Slice(k, 0, acc.last_event_time, None, acc))  # type: ignore[arg-type]
        return ()

    def on_close(self) -> Iterable[dict[tuple[str, ...], WindowAccumulator]]:
        return (self.accs,)

    def snapshot(self) -> dict[tuple[str, ...], WindowAccumulator]:
        # accumulators are merged in place: the snapshot must not see later merges
        return copy.deepcopy(self.accs)


@dataclass
class MonitorState:
    """Snapshot of the ``monitor`` step: drift references and alert firing state."""

    drift: DriftState = field(default_factory=DriftState)
    alerts: AlertState = field(default_factory=AlertState)


@dataclass(frozen=True)
class WindowStreams:
    """Outputs of :func:`window_monitor`: one Polars frame per closed window (all keys)."""

    metrics: Stream[pl.DataFrame]
    alerts: Stream[pl.DataFrame]
    late: Stream[pl.DataFrame]


def _frame_of(item: pl.DataFrame | MicroBatch) -> pl.DataFrame:
    if isinstance(item, MicroBatch):
        return item.valid
    if isinstance(item, pl.DataFrame):
        return item
    raise TypeError(f"window_monitor: expected a Polars DataFrame or MicroBatch, got {type(item).__name__}")


def windower_for(cfg: MonitoringConfig) -> TumblingWindower | SlidingWindower:
    """The Bytewax windower for the configured window length and slide."""
    align = align_origin(cfg)
    length = timedelta(seconds=cfg.window_seconds)
    if cfg.slide_seconds:
        return SlidingWindower(length=length, offset=timedelta(seconds=cfg.slide_seconds), align_to=align)
    return TumblingWindower(length=length, align_to=align)


@operator
def window_monitor(
    step_id: str,
    up: Stream[Any],
    cfg: MonitoringConfig,
    *,
    features: Sequence[DriftFeature] | None = None,
    clock: Clock | None = None,
) -> WindowStreams:
    """Window ``up`` (frames or micro-batches) by event time and key; compute metrics, drift and alerts.

    ``features`` overrides ``cfg.drift.features`` (e.g. from the features stage's
    published specs); ``clock`` supplies the system time that advances the watermark
    while the stream is idle and stamps ``fired_at`` (default: the system clock).
    Bad rules or a missing profile file fail here, at start-up.

    Example: see the module docstring.
    """
    clock = clock or SystemClock()
    feats = list(cfg.drift.features if features is None else features)
    # Built once, at start-up (configuration errors surface here); each closed window
    # binds the step's snapshotted state to them.
    drift = DriftMonitor(cfg, feats)
    engine = AlertEngine(cfg, clock)
    m_schema = metrics_schema(cfg)
    a_schema = alerts_schema(cfg)
    l_schema = late_schema(cfg)

    def to_slices(item: Any) -> list[Slice]:
        return slice_frame(_frame_of(item), cfg, feats)

    slices = op.flat_map("slices", up, to_slices)
    keyed = op.key_on("route", slices, lambda _s: ROUTE)
    ev_clock: EventClock[Slice] = EventClock(
        ts_getter=lambda s: s.max_time,
        wait_for_system_duration=timedelta(seconds=cfg.allowed_lateness_seconds),
        now_getter=clock.now,
    )
    wo = window("window", keyed, ev_clock, windower_for(cfg), _MergeLogic, ordered=False)

    def monitor(state: MonitorState | None, item: tuple[int, dict[tuple[str, ...], WindowAccumulator]]) -> tuple[MonitorState, tuple[pl.DataFrame, pl.DataFrame]]:
        st = state or MonitorState()
        drift.state, engine.state = st.drift, st.alerts
        window_id, accs = item
        start, end = window_bounds(cfg, window_id)
        rows, alerts = [], []
        for key in sorted(accs):
            acc = accs[key]
            row = drift.on_window(metrics_row(acc, start, end, key, cfg), acc)
            rows.append(row)
            alerts.extend(engine.evaluate(row))
        return st, (rows_frame(rows, m_schema), rows_frame(alerts, a_schema))

    results = op.stateful_map("monitor", wo.down, monitor)
    results = op.key_rm("unkey", results)
    metrics = op.map("metrics", results, lambda r: r[0])
    alerts = op.filter("alerts_nonempty", op.map("alerts", results, lambda r: r[1]), lambda f: f.height > 0)

    def late_frame(item: tuple[str, tuple[int, Slice]]) -> pl.DataFrame:
        _, (window_id, s) = item
        start, end = window_bounds(cfg, window_id)
        return rows_frame([late_row(s.acc, start, end, s.key, s.first_id, cfg)], l_schema)

    late = op.map("late", wo.late, late_frame)
    return WindowStreams(metrics=metrics, alerts=alerts, late=late)


class _WebhookPartition(StatelessSinkPartition[pl.DataFrame]):
    def __init__(self, hook: AlertWebhook) -> None:
        self.hook = hook

    def write_batch(self, items: list[pl.DataFrame]) -> None:
        rows = [r for f in items for r in f.iter_rows(named=True)]
        self.hook.send(rows)

    def close(self) -> None:
        self.hook.close()


class AlertWebhookSink(DynamicSink[pl.DataFrame]):
    """Bytewax sink POSTing alert frames to ``monitoring.alerts.webhook_url`` (signed; never fails the flow)."""

    def __init__(self, cfg: MonitoringConfig, *, secret: bytes | None = None) -> None:
        self.cfg = cfg
        self.secret = secret
        AlertWebhook(cfg, secret=secret).close()  # validate at start-up

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WebhookPartition:
        return _WebhookPartition(AlertWebhook(self.cfg, secret=self.secret))


__all__ = ["AlertWebhookSink", "MonitorState", "WindowStreams", "window_monitor", "windower_for"]
