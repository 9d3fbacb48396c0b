"""What both flows are built from: their edges (:class:`FlowIO`, :func:`kafka_io`) and
one builder (:class:`FlowBuilder`) whose composites are written once: the input, the
dead-letter branch, the Parquet datasets and the window-output fan-out (metrics,
late counts and alerts to Parquet, Kafka and the webhook).  Kafka outputs go through
``kafka.delivery``'s sink (transactional by default, see sinks/kafka_txn.py).

Every flow has the same shape::

    fb = FlowBuilder(FLOW, cfg, io or kafka_io(...), run_info=..., topic=..., clock=clock, state_dir=state_dir)
    pieces, headers = fb.spread()                     # "kafka_in", row ranges spread over every worker
    ...the stateless stages, on pieces (op.map)...
    rows = fb.in_order(pieces, headers)               # "reorder": back on the partition's worker, in offset order
    ...the stages that decide per partition in offset order (model calls, windows)...
    fb.dead_letters(rejected, masker, version)        # "mask_dead_letter", "dead_letter_records", "dead_letter_out"
    fb.dataset("enriched", rows)                      # "<name>_parquet", and "<name>_frames_out" for test sinks
    fb.windows(rows)                                  # "windows" and its fan-out
    return fb.finish()

The composites add their steps at the top level of the flow, under the same step ids
the flows always had: step ids are part of the recovery contract (Bytewax keys every
snapshot by them), so none of them may ever change.  ``tests/flows/test_step_ids.py``
holds the list.

>>> import tempfile
>>> from bytewax.testing import run_main
>>> from driftline.config import load_config
>>> from driftline.operators.aggregate import pipeline_version
>>> from driftline.sinks.parquet import RunInfo
>>> from driftline.testing import InMemorySink, micro_batch_source, raw_batches
>>> cfg = load_config(None, env={"DRIFTLINE__SINKS__ROOT": tempfile.mkdtemp()})
>>> io = FlowIO(micro_batch_source(raw_batches([b"x"])), InMemorySink(), frames={"raw": InMemorySink()})
>>> fb = FlowBuilder("doc", cfg, io, run_info=RunInfo(pipeline_version(cfg.monitoring), cfg.config_hash()), topic="t", parquet=False)
>>> fb.frames_out("raw", op.map("heights", fb.input(), len))
>>> run_main(fb.finish())
>>> io.frames["raw"].items
[1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from driftline import metrics, tracing
from driftline.clock import Clock, SystemClock
from driftline.config import PipelineConfig
from driftline.config.monitoring import DriftFeature
from driftline.flows.datasets import COMMIT_ORDER, FLOW_COLUMN, dataset_specs
from driftline.flows.windowing import SourcePartitions, WindowStreams, export_windows, window_monitor
from driftline.operators.decode import RawBatch
from driftline.operators.pii import PiiMasker, mask_dead_letters
from driftline.operators.spread import BatchHeader, Piece, ReorderLogic, Spreader, to_workers
from driftline.sinks.kafka import dead_letter_records, json_records, source_batches
from driftline.sinks.kafka_txn import kafka_output, window_topics_output
from driftline.sinks.parquet import ParquetDatasetSink, RunInfo, parquet_output
from driftline.sinks.parquet.spec import writer_name


@dataclass
class FlowIO:
    """A flow's edges: where raw micro-batches come from and where Kafka-bound records go.

    ``source`` emits raw micro-batches (frames of ``SOURCE_SCHEMA``, or lists of
    :class:`~driftline.operators.decode.RawRecord`); ``dead_letter``, ``output`` (the
    enrich flow's scored rows), ``metrics`` and ``alerts`` take lists of
    :class:`~driftline.sinks.kafka.KafkaBatch` (``None``: not written); ``windows``
    takes the metrics and the alerts records together (one transaction per epoch: an
    alert is never visible before its window's row) and replaces ``metrics`` and
    ``alerts``.  ``frames`` maps a stream's name
    (a dataset's, or ``late`` for ``metrics_late``) to extra sinks of Polars frames:
    tests use :class:`~driftline.testing.InMemorySink`.  Parquet datasets are written
    under ``cfg.sinks.root``.
    """

    source: Source[RawBatch]
    dead_letter: Sink[Any]
    output: Sink[Any] | None = None
    metrics: Sink[Any] | None = None
    alerts: Sink[Any] | None = None
    frames: dict[str, Sink[pl.DataFrame]] = field(default_factory=dict)
    windows: Sink[Any] | None = None


def kafka_io(cfg: PipelineConfig, flow: str, topic: str, *, drain: bool, output_topic: str | None = None, group_id: str | None = None) -> FlowIO:
    """The production edges of ``flow``: ``topic`` in; the dead-letter topic (and
    ``output_topic``, if given) out, and the metrics and alerts topics through one sink;
    each sink is ``kafka.delivery``'s (transactional ids name the flow and ``topic``).
    ``group_id``: the consumer group the processed offsets are also committed to after
    each snapshot, for lag tools (recovery stays the source of truth)."""
    from driftline.kafka_io import MicroBatchKafkaSource
    from driftline.sinks.kafka_txn import output_sink

    k = cfg.kafka
    return FlowIO(
        source=MicroBatchKafkaSource.from_config(k, [topic], drain=drain, group_id=group_id),
        dead_letter=output_sink(k, flow, topic, k.dead_letter_topic),
        output=output_sink(k, flow, topic, output_topic) if output_topic else None,
        windows=output_sink(k, flow, topic, k.metrics_topic, k.alerts_topic),
    )


#: Step ids of the map steps that turn window rows into Kafka records (``metrics``,
#: ``alerts``); the monitor flow has always named them after its output steps.
RECORD_STEPS = ("metrics_records", "alerts_records")


class FlowBuilder:
    """One flow under construction: its Dataflow, edges, clock, datasets and recovery folder.

    ``flow`` names the flow (``enrich``, ``monitor``; the Dataflow is
    ``driftline_<flow>``) and, with ``topic`` (its input topic), the writers of its
    datasets: sink partition ``N`` commits as ``<flow>.<topic>-p<N>``, so two flows, or
    two deployments of one flow on different topics, write under one ``sinks.root``
    without colliding.  ``state_dir`` is the run's recovery folder, if any (windows
    still open at the end of a drained input then wait for the next run);
    ``parquet=False`` writes no dataset (tests that only read ``io.frames``).
    """

    def __init__(
        self,
        flow: str,
        cfg: PipelineConfig,
        io: FlowIO,
        *,
        run_info: RunInfo,
        topic: str,
        clock: Clock | None = None,
        state_dir: str | Path | None = None,
        parquet: bool = True,
    ) -> None:
        self.name = flow
        self.cfg = cfg
        self.io = io
        self.clock = clock or SystemClock()
        self.state_dir = state_dir
        self.run_info = run_info
        self.parquet = parquet
        self.specs = dataset_specs(cfg)
        self.writer_name = writer_name(flow, topic)
        self.flow = Dataflow(f"driftline_{flow}")
        self._raw: Stream[RawBatch] | None = None
        self.partitions = SourcePartitions(io.source)  # the input partitions, listed once per process at run time
        tracing.configure(cfg.tracing)  # before any step is wrapped: spans per step when tracing is on
        self._frames_used: set[str] = set()

    # -- edges ---------------------------------------------------------------------

    def input(self) -> Stream[RawBatch]:
        """The raw micro-batches (step ``kafka_in``); the decode step passes each through :meth:`counted`."""
        self._raw = op.input("kafka_in", self.flow, self.io.source)
        return self._raw

    def spread(self) -> tuple[Stream[Piece[RawBatch]], Stream[BatchHeader]]:
        """The input cut into row ranges spread over every worker (``spread``,
        ``spread_headers``, ``spread_pieces``), and the batch headers that put them back
        in order in :meth:`in_order` (see :mod:`driftline.operators.spread`).  Each
        worker runs the share of the ranges that evens out the load of the keyed steps
        and sink partitions Bytewax put on it (see :mod:`driftline.operators.placement`)."""
        kafka_parts = self.cfg.kafka.transactions.partitions if self.cfg.kafka.delivery == "exactly_once" else 1
        spreader = Spreader(self.partitions, parquet_parts=self.cfg.sinks.partitions if self.parquet else 1, kafka_parts=kafka_parts)
        items = op.flat_map("spread", self.input(), spreader.split)
        headers = op.branch("spread_headers", items, lambda i: isinstance(i, BatchHeader))
        return to_workers("spread_pieces", headers.falses), headers.trues

    def in_order(self, pieces: Stream[Piece[Any]], headers: Stream[BatchHeader]) -> Stream[Any]:
        """The pieces' values back on their partition's worker, in offset order (step ``reorder``)."""
        keyed = op.key_on("reorder_key", op.merge("reorder_in", pieces, headers), lambda i: i.key)
        return op.key_rm("reorder_out", op.stateful_batch("reorder", keyed, lambda st: ReorderLogic(f"{self.flow.flow_id}.reorder", st)))

    def counted(self, records: RawBatch) -> RawBatch:
        """Count a raw micro-batch (a frame's height or a list's length) as the flow's input."""
        n = len(records)
        if n:
            metrics.observe_in(self.name, n)
            metrics.count_input(n)
        return records

    def frames_out(self, name: str, stream: Stream[pl.DataFrame]) -> None:
        """Send ``stream`` to ``io.frames[name]`` (step ``<name>_frames_out``), if the IO has one."""
        sink = self.io.frames.get(name)
        if sink is not None:
            self._frames_used.add(name)
            op.output(f"{name}_frames_out", stream, sink)

    def parquet_sink(self, name: str) -> ParquetDatasetSink:
        """The exactly-once Parquet sink of dataset ``name`` (see flows/datasets.py)."""
        if name not in self.specs:
            raise KeyError(f"flow {self.name!r}: no dataset {name!r} is registered (known: {sorted(self.specs)})")
        return ParquetDatasetSink(
            self.specs[name], self.cfg.sinks, run_info=self.run_info, clock=self.clock, writer_name=self.writer_name, commit_after=COMMIT_ORDER.get(name)
        )

    def dataset(self, name: str, stream: Stream[pl.DataFrame], *, frames: str | None = None, ticks: Stream[pl.DataFrame] | None = None) -> None:
        """Write ``stream`` to dataset ``name`` (step ``<name>_parquet``) and to
        ``io.frames[frames or name]``; ``ticks`` (empty frames) are merged into the
        Parquet side only (step ``<name>_ticked``), to drive its time-based flushes."""
        if self.parquet:
            stored = stream if ticks is None else op.merge(f"{name}_ticked", stream, ticks)
            parquet_output(f"{name}_parquet", stored, tracing.sink(f"{name}_parquet", self.parquet_sink(name)))
        self.frames_out(frames or name, stream)

    def records_out(self, step_id: str, records_step: str, frames: Stream[pl.DataFrame], sink: Sink[Any] | None, key_column: str, columns: Sequence[str] | None = None) -> None:
        """Frames of source rows as JSON Kafka records (step ``records_step``), one batch per
        input partition covering its source offsets, to ``sink`` (step ``step_id``), if
        there is one."""
        if sink is None:
            return
        cols = list(columns) if columns is not None else None
        encode: Callable[[pl.DataFrame], Any] = lambda f: source_batches(f, lambda p: json_records(p, cols if cols is not None else list(p.columns), key_column))  # noqa: E731
        kafka_output(step_id, op.map(records_step, frames, tracing.step(records_step, encode)), tracing.sink(step_id, sink))

    # -- composites ----------------------------------------------------------------

    def dead_letters(self, rejected: Stream[pl.DataFrame], masker: PiiMasker, version: str) -> None:
        """Refused rows to the dead-letter topic: masked first with ``privacy.mask_dead_letter``
        (else the producer's original bytes: the input topic's trust zone), with the
        reason headers of ``version`` (the validator's or decoder's)."""
        t = tracing.step  # timers and spans
        if self.cfg.privacy.mask_dead_letter:
            rejected = op.map("mask_dead_letter", rejected, t("mask_dead_letter", lambda f: mask_dead_letters(f, masker)))
        records = op.map("dead_letter_records", rejected, t("dead_letter_records", lambda f: source_batches(f, lambda p: dead_letter_records(p, version))))
        kafka_output("dead_letter_out", records, tracing.sink("dead_letter_out", self.io.dead_letter))

    def windows(self, rows: Stream[Any], *, features: Sequence[DriftFeature] | None = None, record_steps: tuple[str, str] = RECORD_STEPS) -> WindowStreams:
        """Event-time windows of ``rows`` (step ``windows``) and their fan-out: the
        ``metrics``, ``metrics_late`` and ``alerts`` datasets, the metrics and alerts
        topics, the window gauges, the active alerts (Alertmanager) and the alert webhook
        (``monitoring.alerts.webhook_url``); see :func:`~driftline.flows.windowing.export_windows`.
        Every row carries the flow's name in ``flow``."""
        win = window_monitor(
            "windows",
            rows,
            self.cfg.monitoring,
            features=features,
            clock=self.clock,
            recovery=self.state_dir is not None,
            partitions=self.partitions,
        )
        # the flow is part of a window row's key: both flows write these datasets and topics
        stamp = lambda f: f.with_columns(pl.lit(self.name, pl.Utf8).alias(FLOW_COLUMN))  # noqa: E731
        win = WindowStreams(
            metrics=op.map("metrics_flow", win.metrics, stamp), alerts=op.map("alerts_flow", win.alerts, stamp), late=op.map("late_flow", win.late, stamp)
        )
        # the window streams carry no idle ticks (only closed windows), but a dataset's
        # time-based flush runs when items arrive: the input's idle ticks go to these
        # datasets too, so the last windows before a quiet spell are committed after
        # flush_seconds instead of waiting for the next window (the commit-lag gauge)
        ticks = None
        if self.parquet and self._raw is not None:
            ticks = op.filter_map("window_idle_ticks", self._raw, lambda recs: None if len(recs) else pl.DataFrame())
        self.dataset("metrics", win.metrics, ticks=ticks)
        self.dataset("metrics_late", win.late, frames="late", ticks=ticks)
        self.dataset("alerts", win.alerts, ticks=ticks)
        window_topics_output(win.metrics, win.alerts, self.cfg.kafka, windows=self.io.windows, metrics=self.io.metrics, alerts=self.io.alerts, record_steps=record_steps)
        export_windows(self.name, win, self.cfg.monitoring)
        return win

    def finish(self) -> Dataflow:
        """The wired Dataflow; an ``io.frames`` entry no step took is an error (a typo in a test)."""
        unused = sorted(set(self.io.frames) - self._frames_used)
        if unused:
            raise ValueError(f"flow {self.name!r}: io.frames names no stream of this flow: {unused} (streams: {sorted(self._frames_used) or 'none'})")
        return self.flow
