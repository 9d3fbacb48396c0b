"""Event-time windows, drift and alerts as Bytewax steps, shared by both flows.

How it works (the logic lives in :mod:`driftline.operators.aggregate.windows`):

1. ``frames`` and ``partitions``: each micro-batch (a Polars frame, or a :class:`MicroBatch`
   whose ``valid`` rows are used) is cut down to the columns the windows read
   (:func:`~driftline.operators.aggregate.accumulator.window_input_columns`) and split by
   input partition (``src_topic``/``src_partition``; one partition when the columns are absent).
2. ``event_time`` (keyed by input partition): decides which rows are late from the
   partition's own frontier, cuts the on-time rows into per-key, per-pane slices (one
   vectorized pass) and sends each slice to the shard of its window key, followed by the
   partition's frontier to every shard.  Late rows become ``metrics_late`` rows.
3. ``window_shards`` (keyed by shard, ``monitoring.window_shards`` of them): merges slices
   into open windows and emits each window and key once, when every input partition
   has passed its end plus the allowed lateness (idle partitions are released after
   ``idle_partition_timeout_seconds``; the source's idle ticks reach every shard).
4. ``monitor_keys`` (keyed by window key): metrics row, drift columns and alert rules,
   window after window.

Windows depend on the input only (not on workers, batch boundaries, partition
interleaving or restarts); see docs/monitoring.md.  At the end of a drained input,
windows still open are emitted (``end_of_input: close``, the default without a recovery
folder) or kept in the recovery snapshot for the next run (``keep``, the default with one).

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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Stream, operator

from driftline import metrics
from driftline.clock import Clock, SystemClock
from driftline.config.monitoring import DriftFeature, MonitoringConfig
from driftline.logs import get_logger
from driftline.operators.aggregate import key_string, late_schema
from driftline.operators.aggregate.accumulator import window_input_columns
from driftline.operators.aggregate.event_time import LateSlice, partition_id
from driftline.operators.aggregate.windows import TICK, ClosedWindow, EventTimeLogic, MonitorLogic, WindowShardLogic, late_frame, shard_keys
from driftline.operators.alerts import AlertEngine
from driftline.operators.batch import MicroBatch
from driftline.operators.placement import source_part_coordinates
from driftline.operators.drift import ProfileFile
from driftline.sinks.alertmanager import ActiveAlertsSink
from driftline.sinks.webhook import PARTITION as ALERT_PARTITION
from driftline.sinks.webhook import WebhookSink

TOPIC, PARTITION = "src_topic", "src_partition"
log = get_logger("windows")


@dataclass(frozen=True)
class WindowStreams:
    """Outputs of :func:`window_monitor`: Polars frames of metrics rows, alerts and late rows."""

    metrics: Stream[pl.DataFrame]
    alerts: Stream[pl.DataFrame]
    late: Stream[pl.DataFrame]


def _frame_of(item: pl.DataFrame | MicroBatch, keep: frozenset[str]) -> pl.DataFrame:
    """The rows of ``item`` with the columns in ``keep`` only, in their order."""
    if isinstance(item, MicroBatch):
        frame = item.valid
    elif isinstance(item, pl.DataFrame):
        frame = item
    else:
        raise TypeError(f"window_monitor: expected a Polars DataFrame or MicroBatch, got {type(item).__name__}")
    cols = [c for c in frame.columns if c in keep]
    return frame if len(cols) == frame.width else frame.select(cols)


def split_partitions(frame: pl.DataFrame) -> list[tuple[str, tuple[str, pl.DataFrame]]]:
    """``(partition id, (partition id, rows))`` per input partition of a frame, rows in their order."""
    if frame.height == 0:
        return []
    if TOPIC not in frame.columns or PARTITION not in frame.columns:
        return [("", ("", frame))]
    out = []
    for (topic, part), rows in frame.partition_by([TOPIC, PARTITION], as_dict=True, maintain_order=True).items():
        pid = partition_id(topic, part)
        out.append((pid, (pid, rows)))
    return out


class SourcePartitions:
    """The input partitions of a Kafka micro-batch source (``topic+partition``), listed once
    per process when a window shard is first built (at run time: building a flow stays
    offline); other sources have none, and windows then learn partitions from the rows."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self._names: frozenset[str] | None = None

    def __call__(self) -> frozenset[str]:
        if self._names is None:
            from driftline.kafka_io import MicroBatchKafkaSource

            names: list[str] = []
            if isinstance(self.source, MicroBatchKafkaSource):
                try:
                    names = [partition_id(*source_part_coordinates(p)) for p in self.source.list_parts()]
                except Exception as exc:  # the source reports the broker's state itself
                    log.warning("window shards could not list the input partitions; learning them from the rows", extra={"fields": {"error": type(exc).__name__}})
            self._names = frozenset(names)
        return self._names


def close_at_end(cfg: MonitoringConfig, *, recovery: bool) -> bool:
    """Whether windows still open at the end of a drained input are emitted (see ``monitoring.end_of_input``)."""
    return cfg.end_of_input == "close" or (cfg.end_of_input == "auto" and not recovery)


@operator
def window_monitor(
    step_id: str,
    up: Stream[Any],
    cfg: MonitoringConfig,
    *,
    features: Sequence[DriftFeature] | None = None,
    clock: Clock | None = None,
    recovery: bool = False,
    partitions: Iterable[str] | Callable[[], Iterable[str]] = (),
) -> WindowStreams:
    """Window ``up`` (frames or micro-batches) by event time and key; compute metrics, drift and alerts.

    ``features`` overrides ``cfg.drift.features`` (e.g. from the features stage's
    published specs); ``clock`` supplies the system time used only to release idle
    partitions and to stamp ``fired_at`` (default: the system clock).  ``recovery`` says
    whether the run resumes from and snapshots to a recovery folder (it decides
    ``end_of_input: auto``); ``partitions`` names the input partitions known to exist
    (``topic+partition``; or a callable listing them at run time, see
    :class:`SourcePartitions`), which hold windows open until they deliver or go idle.
    Bad rules or a missing profile file fail here, at start-up.

    Example: see the module docstring.
    """
    clock = clock or SystemClock()
    feats = list(cfg.drift.features if features is None else features)
    # configuration errors surface here, at start-up; the profile is loaded once and shared read-only
    profile = ProfileFile.load(cfg.drift.profile_path) if cfg.drift.reference == "profile" and cfg.drift.profile_path else None
    AlertEngine(cfg, clock)
    close = close_at_end(cfg, recovery=recovery)
    expected: Callable[[], Iterable[str]] = partitions if callable(partitions) else (lambda names=frozenset(partitions): names)
    shards = shard_keys(cfg.window_shards)
    l_schema = late_schema(cfg)

    # only the columns the window steps read go on (the scored rows are about a hundred
    # columns wide, and the keyed steps below may run on another worker: what crosses is pickled)
    keep = window_input_columns(cfg, feats) | {TOPIC, PARTITION}
    frames = op.map("frames", up, lambda item: _frame_of(item, keep))
    parts = op.flat_map("partitions", frames, split_partitions)
    timed = op.key_rm("event_time_out", op.stateful_batch("event_time", parts, lambda st: EventTimeLogic(cfg, feats, close, st)))
    late_rows = op.branch("late_rows", timed, lambda v: isinstance(v, LateSlice))
    ticks = op.flat_map("ticks", frames, lambda f: [(k, [TICK]) for k in shards] if f.height == 0 else [])
    shard_in = op.merge("shard_in", late_rows.falses, ticks)
    shard_step = f"{step_id}.window_shards"
    windowed = op.key_rm(
        "window_shards_out", op.stateful_batch("window_shards", shard_in, lambda st: WindowShardLogic(shard_step, cfg, clock, close, frozenset(expected()), st))
    )
    closed = op.branch("closed", windowed, lambda v: isinstance(v, ClosedWindow))
    by_key = op.key_on("window_keys", closed.trues, lambda cw: key_string(cfg, cw.key))
    results = op.key_rm("unkey", op.stateful_batch("monitor_keys", by_key, lambda st: MonitorLogic(cfg, feats, profile, clock, st)))
    metrics = op.filter("metrics_nonempty", op.map("metrics", results, lambda r: r[0]), lambda f: f.height > 0)
    alerts = op.filter("alerts_nonempty", op.map("alerts", results, lambda r: r[1]), lambda f: f.height > 0)
    late_all = op.merge("late_all", late_rows.trues, closed.falses)
    late = op.map("late", late_all, lambda s: late_frame(s, cfg, l_schema))
    return WindowStreams(metrics=metrics, alerts=alerts, late=late)


def export_windows(flow: str, streams: WindowStreams, cfg: MonitoringConfig) -> None:
    """Operations outputs of the windows: each closed window's KPIs as Prometheus gauges
    (step ``metrics_gauges``), the alert rows to the active-alert set (``alerts_active_out``:
    the ``driftline_active_alerts`` gauge, and Alertmanager when ``alerts.alertmanager_urls``
    is set, re-sent while active) and to the webhook (``alerts_webhook_out``, when
    ``alerts.webhook_url`` is set).  Delivery failures never stop the flow."""
    op.inspect("metrics_gauges", streams.metrics, lambda _step, rows: metrics.WINDOWS.observe(flow, rows, cfg.key_dims))
    keyed = op.map("alerts_keyed", streams.alerts, lambda f: (ALERT_PARTITION, f))
    op.output("alerts_active_out", keyed, ActiveAlertsSink(cfg))
    if cfg.alerts.webhook_url:
        op.output("alerts_webhook_out", keyed, WebhookSink(cfg))


__all__ = ["SourcePartitions", "WindowStreams", "close_at_end", "export_windows", "split_partitions", "window_monitor"]
