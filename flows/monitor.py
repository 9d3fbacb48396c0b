"""The monitor flow: model-call telemetry from services that call models elsewhere.

Reads ``schemas/model_call.avsc`` events (JSON or Avro single-object) from
``kafka.telemetry_topic``, refuses undecodable ones to the dead-letter topic, prices
each call from ``models.pricing``, masks ``prompt`` and ``completion`` with the privacy
engine before anything is stored, and produces the same windows, drift and alerts as
the enrich flow (:func:`driftline.flows.windowing.window_monitor`).

Outputs: the masked telemetry (``telemetry`` dataset), window rows (``metrics``
dataset and ``kafka.metrics_topic``), late counts (``metrics_late``), alerts (``alerts``
dataset, ``kafka.alerts_topic``, optional webhook).  Step ids are part of the recovery
contract: never rename one.

Without Kafka, inject a source and in-memory sinks:

>>> from bytewax.testing import run_main
>>> from driftline.config import load_config
>>> from driftline.testing import InMemorySink, micro_batch_source, raw_batches
>>> cfg = load_config(None, env={})
>>> io = MonitorIO(micro_batch_source(raw_batches([b'{"call_id":"c1","event_time":0,"service":"s","model":"m",'
...     b'"input_tokens":1,"output_tokens":2,"latency_ms":30}'])), InMemorySink(), frames={"metrics": InMemorySink()})
>>> run_main(build_monitor_flow(cfg, io=io, parquet=False))
>>> io.frames["metrics"].items[0].select("key", "model_calls").row(0)
('source=s|model=m', 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from driftline import metrics
from driftline.clock import Clock, SystemClock
from driftline.config import PipelineConfig
from driftline.config.monitoring import DriftFeature
from driftline.operators.aggregate import pipeline_version
from driftline.operators.decode import RawBatch
from driftline.operators.pii import PiiMasker, load_pseudonym_key, mask_dead_letters
from driftline.sinks.kafka import dead_letter_records
from driftline.operators.decode_telemetry import TelemetryBatch, decode_telemetry, with_cost
from driftline.flows.datasets import TELEMETRY_COLUMNS, dataset_specs
from driftline.flows.windowing import SourcePartitions, export_windows, window_monitor

FLOW = "monitor"
TEXT_COLUMNS = ("prompt", "completion")

#: Telemetry carries no feature columns; drift covers confidence and labels.
TELEMETRY_FEATURES: list[DriftFeature] = []


@dataclass
class MonitorIO:
    """Edges of the monitor flow.

    ``source`` emits raw micro-batches (see :class:`~driftline.flows.enrich.EnrichIO`); ``dead_letter`` and the optional
    ``metrics_topic``/``alerts_topic`` take lists of Kafka ``(key, value, headers)``;
    ``frames`` maps ``telemetry``, ``metrics``, ``alerts``, ``late`` to extra sinks of
    Polars frames (tests use :class:`~driftline.testing.InMemorySink`).
    """

    source: Source[RawBatch]
    dead_letter: Sink[Any]
    metrics_topic: Sink[Any] | None = None
    alerts_topic: Sink[Any] | None = None
    frames: dict[str, Sink[pl.DataFrame]] = field(default_factory=dict)


def kafka_io(cfg: PipelineConfig, *, drain: bool) -> MonitorIO:
    """The production edges: the telemetry topic in, dead-letter, metrics and alerts topics out."""
    from driftline.kafka_io import MicroBatchKafkaSource
    from driftline.sinks.kafka import KafkaRecordsSink

    k = cfg.kafka
    source = MicroBatchKafkaSource.from_config(k, [k.telemetry_topic], drain=drain, group_id=f"driftline-{FLOW}")
    return MonitorIO(
        source=source,
        dead_letter=KafkaRecordsSink.from_config(k, k.dead_letter_topic),
        metrics_topic=KafkaRecordsSink.from_config(k, k.metrics_topic),
        alerts_topic=KafkaRecordsSink.from_config(k, k.alerts_topic),
    )


class TextMasker:
    """Masks ``prompt``/``completion`` with the privacy engine; the one place the monitor flow touches it."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.masker = PiiMasker.from_config(cfg.privacy, load_pseudonym_key(cfg.privacy, cfg.mode))
        self.mode = "masked"

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        pii = pl.Series("pii_total", [0] * frame.height, dtype=pl.Int64)
        cols = []
        for name in TEXT_COLUMNS:
            s = frame.get_column(name)
            if frame.height == 0:
                cols.append(pl.Series(name, [None] * frame.height, dtype=pl.Utf8))
                continue
            filled = s.fill_null("")
            res = self.masker.scan(filled)
            masked = res.masked.zip_with(s.is_not_null(), pl.Series([None] * frame.height, dtype=pl.Utf8)).rename(name)
            cols.append(masked)
            for entity, counts in res.counts.items():
                found = pl.Series(counts).cast(pl.Int64)
                pii = pii + found
                metrics.observe_pii(FLOW, {entity: int(found.sum())})
        return frame.with_columns(*cols, pii.alias("pii_total"), pl.lit(self.mode, pl.Utf8).alias("text_masking"))


def telemetry_rows(batch: TelemetryBatch, cfg: PipelineConfig, masker: TextMasker) -> pl.DataFrame:
    """Valid telemetry rows, priced and masked: safe to store and to window."""
    return masker(with_cost(batch.valid, cfg.models.pricing))


def _json_out(step_id: str, frames: Stream[pl.DataFrame], sink: Sink[Any], key_column: str) -> None:
    from driftline.sinks.kafka import json_records

    op.output(step_id, op.map(f"{step_id}_records", frames, lambda f: json_records(f, list(f.columns), key_column)), sink)


def build_monitor_flow(
    cfg: PipelineConfig,
    *,
    io: MonitorIO | None = None,
    drain: bool = False,
    clock: Clock | None = None,
    parquet: bool = True,
    state_dir: str | Path | None = None,
) -> Dataflow:
    """Wire the monitor dataflow; configuration errors (rules, profile file, masker) fail here.

    ``state_dir`` is the run's recovery folder, if it has one: windows still open when a
    drained input ends then continue in the next run (``monitoring.end_of_input``).
    """
    clock = clock or SystemClock()
    io = io or kafka_io(cfg, drain=drain)
    masker = TextMasker(cfg)
    metrics.configure(cfg.monitoring.metrics)

    timed = metrics.timed  # per-step timers, on with $DRIFTLINE_STEP_TIMERS (the function itself otherwise)
    flow = Dataflow("driftline_monitor")
    raw = op.input("kafka_in", flow, io.source)
    batches = op.map("decode", raw, timed("decode", lambda recs: decode_telemetry(_counted(recs), cfg.decode)))
    rejected = op.map("rejected_rows", batches, lambda b: _refused(b.rejected))
    rows = op.map("telemetry_rows", batches, timed("telemetry_rows", lambda b: telemetry_rows(b, cfg, masker)))
    op.inspect("model_metrics", rows, lambda _step, f: metrics.observe_model_calls(FLOW, f))
    if cfg.privacy.mask_dead_letter:
        rejected = op.map("mask_dead_letter", rejected, lambda f: mask_dead_letters(f, masker.masker))
    op.output("dead_letter_out", op.map("dead_letter_records", rejected, lambda f: dead_letter_records(f, "telemetry-decode/1")), io.dead_letter)

    out = window_monitor(
        "windows", rows, cfg.monitoring, features=TELEMETRY_FEATURES, clock=clock, recovery=state_dir is not None, partitions=SourcePartitions(io.source)
    )
    stored = op.map("telemetry_stored", rows, lambda f: f.select([pl.col(c).cast(t) for c, t in TELEMETRY_COLUMNS.items()]))

    streams = {"telemetry": stored, "metrics": out.metrics, "alerts": out.alerts, "late": out.late}
    for name, sink in io.frames.items():
        op.output(f"{name}_frames_out", streams[name], sink)
    if io.metrics_topic is not None:
        _json_out("metrics_topic_out", out.metrics, io.metrics_topic, "key")
    if io.alerts_topic is not None:
        _json_out("alerts_topic_out", out.alerts, io.alerts_topic, "key")
    export_windows(FLOW, out, cfg.monitoring)
    if parquet:
        from driftline.sinks.parquet import ParquetDatasetSink, RunInfo, parquet_output

        run_info = RunInfo(pipeline_version=pipeline_version(cfg.monitoring), config_hash=cfg.config_hash(), model_versions={})
        specs = dataset_specs(cfg)
        for name, stream in (("telemetry", stored), ("metrics", out.metrics), ("metrics_late", out.late), ("alerts", out.alerts)):
            parquet_output(f"{name}_parquet", stream, metrics.timed_sink(f"{name}_parquet", ParquetDatasetSink(specs[name], cfg.sinks, run_info=run_info, clock=clock)))
    return flow


def _refused(rejected: pl.DataFrame) -> pl.DataFrame:
    metrics.observe_rejected(FLOW, rejected)
    return rejected


def _counted(records: RawBatch) -> RawBatch:
    n = len(records)
    if n:
        metrics.observe_in(FLOW, n)
        metrics.count_input(n)
    return records


__all__ = ["MonitorIO", "TextMasker", "build_monitor_flow", "kafka_io", "telemetry_rows"]
