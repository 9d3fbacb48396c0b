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

from pathlib import Path

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow

from driftline import metrics
from driftline.clock import Clock
from driftline.config import PipelineConfig
from driftline.config.monitoring import DriftFeature
from driftline.flows.common import FlowBuilder, FlowIO
from driftline.flows.common import kafka_io as flow_kafka_io
from driftline.flows.datasets import TELEMETRY_COLUMNS
from driftline.operators.aggregate import pipeline_version
from driftline.operators.decode_telemetry import TelemetryBatch, decode_telemetry, with_cost
from driftline.operators.pii import PiiMasker, load_pseudonym_key
from driftline.sinks.parquet import RunInfo

FLOW = "monitor"
TEXT_COLUMNS = ("prompt", "completion")

#: Telemetry carries no feature columns; drift covers confidence and labels.
TELEMETRY_FEATURES: list[DriftFeature] = []

#: The monitor flow's edges (see :class:`~driftline.flows.common.FlowIO`; it has no ``output``).
MonitorIO = FlowIO

#: The monitor flow's historic ids of the steps that encode window rows as Kafka records (recovery contract).
RECORD_STEPS = ("metrics_topic_out_records", "alerts_topic_out_records")


def kafka_io(cfg: PipelineConfig, *, drain: bool) -> FlowIO:
    """The production edges: the telemetry topic in, dead-letter, metrics and alerts topics out."""
    return flow_kafka_io(cfg, FLOW, cfg.kafka.telemetry_topic, drain=drain, group_id=f"driftline-{FLOW}")


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


def build_monitor_flow(
    cfg: PipelineConfig,
    *,
    io: FlowIO | None = None,
    drain: bool = False,
    clock: Clock | None = None,
    state_dir: str | Path | None = None,
    parquet: bool = True,
) -> Dataflow:
    """Wire the monitor dataflow; configuration errors (rules, profile file, masker) fail here.

    ``state_dir`` is the run's recovery folder, if it has one: windows still open when a
    drained input ends then continue in the next run (``monitoring.end_of_input``).
    """
    masker = TextMasker(cfg)
    metrics.configure(cfg.monitoring.metrics)
    run_info = RunInfo(pipeline_version=pipeline_version(cfg.monitoring), config_hash=cfg.config_hash(), model_versions={})
    fb = FlowBuilder(FLOW, cfg, io or kafka_io(cfg, drain=drain), clock=clock, state_dir=state_dir, run_info=run_info, topic=cfg.kafka.telemetry_topic, parquet=parquet)

    t = metrics.timed  # per-step timers, on with $DRIFTLINE_STEP_TIMERS (the function itself otherwise)
    # decoding, pricing and masking run on row ranges spread over every worker; "reorder"
    # brings each partition's rows back in offset order for the windows and the datasets
    pieces, headers = fb.spread()
    pieces = op.map("decode", pieces, t("decode", lambda pc: pc.map(lambda recs: decode_telemetry(fb.counted(recs), cfg.decode))))
    pieces = op.map("telemetry_rows", pieces, t("telemetry_rows", lambda pc: pc.map(lambda b: (b.rejected, telemetry_rows(b, cfg, masker)))))
    pairs = fb.in_order(pieces, headers)
    rejected = op.map("rejected_rows", pairs, lambda pair: _refused(pair[0]))
    rows = op.map("valid_rows", pairs, lambda pair: pair[1])
    op.inspect("model_metrics", rows, lambda _step, f: metrics.observe_model_calls(FLOW, f))
    fb.dead_letters(rejected, masker.masker, "telemetry-decode/1")

    stored = op.map("telemetry_stored", rows, lambda f: f.select([pl.col(c).cast(dtype) for c, dtype in TELEMETRY_COLUMNS.items()]))
    fb.dataset("telemetry", stored)
    fb.windows(rows, features=TELEMETRY_FEATURES, record_steps=RECORD_STEPS)
    return fb.finish()


def _refused(rejected: pl.DataFrame) -> pl.DataFrame:
    metrics.observe_rejected(FLOW, rejected)
    return rejected


__all__ = ["MonitorIO", "TextMasker", "build_monitor_flow", "kafka_io", "telemetry_rows"]
