"""The enrich flow: Kafka text events in; validated, masked, enriched, model-scored
rows out to Parquet and Kafka; refusals to the dead-letter topic and the ``rejected``
dataset.

This module only wires Bytewax steps; the logic lives in ``driftline.operators`` and
``driftline.sinks`` as plain functions over micro-batches.  Step ids are part of the
recovery contract: never rename one.

Run it with ``driftline run enrich`` (add ``--drain`` to stop at the end of the topic).
Without Kafka, inject an in-memory source and sinks:

>>> from driftline.config import load_config
>>> from driftline.testing import InMemorySink, micro_batch_source, raw_batches
>>> from bytewax.testing import run_main
>>> import tempfile
>>> cfg = load_config(None, env={"DRIFTLINE__SINKS__ROOT": tempfile.mkdtemp()})
>>> dlq = InMemorySink()
>>> io = EnrichIO(micro_batch_source(raw_batches([b"not json"])), dlq, None)
>>> run_main(build_enrich_flow(cfg, io=io))
>>> [dict(h)["driftline.reason_codes"] for _, _, h in dlq.items[0]]
[b'["bad_json"]']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from driftline import __version__, metrics
from driftline.clock import Clock, SystemClock
from driftline.config import ConfigError, PipelineConfig
from driftline.runner import resolve_state_paths
from driftline.kafka_io import MicroBatchKafkaSource
from driftline.operators.batch import MicroBatch
from driftline.flows.windowing import SourcePartitions, export_windows, window_monitor
from driftline.models import ModelService, model_output_schema
from driftline.operators.decode import RawBatch, decode_batch
from driftline.operators.model_call import model_batch_key, model_call_builder
from driftline.operators.features import FeatureEngine, features_batch
from driftline.operators.pii import PiiMasker, load_pseudonym_key, mask_batch_audited, mask_dead_letters
from driftline.operators.pii.operator import entities_for
from driftline.operators.sanitize import Sanitizer, sanitize_frame
from driftline.operators.validation import VALIDATOR_VERSION, Validator, validate_batch
from driftline.sinks.kafka import KafkaRecordsSink, dead_letter_records, json_records
from driftline.sinks.parquet import ParquetDatasetSink, RunInfo, parquet_output
from driftline.flows.datasets import dataset_specs

FLOW = "enrich"


@dataclass
class EnrichIO:
    """The flow's edges: where micro-batches come from and where Kafka-bound records go.

    ``source`` emits raw micro-batches (frames of ``SOURCE_SCHEMA``, or lists of
    :class:`~driftline.operators.decode.RawRecord`); ``dead_letter`` and ``output`` take
    lists of ``(key, value, headers)``.  Parquet datasets are always written under
    ``cfg.sinks.root``.
    """

    source: Source[RawBatch]
    dead_letter: Sink[Any]
    output: Sink[Any] | None
    metrics: Sink[Any] | None = None
    alerts: Sink[Any] | None = None


def kafka_io(cfg: PipelineConfig, *, drain: bool) -> EnrichIO:
    k = cfg.kafka
    source = MicroBatchKafkaSource.from_config(k, [k.input_topic], drain=drain, group_id=f"driftline-{FLOW}")
    return EnrichIO(
        source=source,
        dead_letter=KafkaRecordsSink.from_config(k, k.dead_letter_topic),
        output=KafkaRecordsSink.from_config(k, k.output_topic),
        metrics=KafkaRecordsSink.from_config(k, k.metrics_topic),
        alerts=KafkaRecordsSink.from_config(k, k.alerts_topic),
    )


def build_enrich_flow(
    cfg: PipelineConfig, *, io: EnrichIO | None = None, drain: bool = False, clock: Clock | None = None, state_dir: str | Path | None = None
) -> Dataflow:
    """Wire the enrich dataflow.  Everything heavy (rule compilation, pattern
    compilation, model loading) happens here, at start-up, so bad configuration fails
    before the first record.

    ``state_dir`` holds the flow's own durable state besides Bytewax's snapshots (the
    model call ledger); pass the recovery folder so both travel together.  Without one
    the run has no recovery folder: windows still open when a drained input ends are
    emitted (``monitoring.end_of_input``).
    """
    clock = clock or SystemClock()
    cfg = resolve_state_paths(cfg, state_dir)
    io = io or kafka_io(cfg, drain=drain)
    validator = Validator.from_config(cfg.validation)
    masker = PiiMasker.from_config(cfg.privacy, load_pseudonym_key(cfg.privacy, cfg.mode))
    features = FeatureEngine.from_config(cfg.features)
    sanitizer = Sanitizer.from_config(cfg.features, masker)
    models = ModelService(cfg.models, clock)
    metrics.configure(cfg.monitoring.metrics)
    metrics.watch_budgets(models.budgets)
    run_info = RunInfo(pipeline_version=__version__, config_hash=cfg.config_hash(), model_versions={t.name: t.backend.model for t in models.tiers})
    specs = dataset_specs(cfg)
    try:
        cfg.monitoring.check_drift_columns(specs["enriched"].schema.names)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sink = lambda name: metrics.timed_sink(f"{name}_parquet", ParquetDatasetSink(specs[name], cfg.sinks, run_info=run_info, clock=clock))  # noqa: E731

    t = metrics.timed  # per-step timers, on with $DRIFTLINE_STEP_TIMERS (the function itself otherwise)
    flow = Dataflow("driftline_enrich")
    raw = op.input("kafka_in", flow, io.source)
    batches = op.map("decode", raw, t("decode", lambda recs: decode_batch(_counted(recs), cfg.decode, clock.now())))
    batches = op.map("validate", batches, t("validate", lambda b: validate_batch(b, validator, clock.now())))
    masked = op.map("mask_pii", batches, t("mask_pii", lambda b: mask_batch_audited(b, masker)))
    audit = op.map("audit_rows", masked, lambda pair: pair[1])
    batches = op.map("masked_batch", masked, lambda pair: pair[0])
    entities = entities_for(cfg)
    op.inspect("pii_metrics", batches, lambda _step, b: metrics.observe_pii(FLOW, metrics.pii_counts(b.valid, entities)))
    batches = op.map("features", batches, t("features", lambda b: features_batch(b, features)))

    rejected = op.map("rejected_rows", batches, t("rejected_rows", _rejected_rows))
    valid = op.map("valid_rows", batches, _valid_rows)
    valid = op.map("sanitize", valid, t("sanitize", lambda f: sanitize_frame(f, sanitizer)))

    # Model calls: keyed by input partition (spread over the workers, each key batching its
    # own rows by count or waiting time); idle ticks (empty frames) bypass the batcher so
    # time-based file flushes downstream keep moving.
    keyed = op.key_on("key_models", op.filter("rows_for_models", valid, lambda f: f.height > 0), model_batch_key)
    called = op.stateful_batch("model_call", keyed, metrics.timed_logic("model_call", model_call_builder("model_call", models, cfg.models.batching, clock)))
    results = op.map("model_results", called, lambda kv: metrics.observe_out(FLOW, kv[1].results))
    ticks = op.filter("idle_ticks", valid, lambda f: f.height == 0)
    scored = op.merge("scored", results, ticks)

    if cfg.privacy.mask_dead_letter:
        dlq_frames = op.map("mask_dead_letter", rejected, t("mask_dead_letter", lambda f: mask_dead_letters(f, masker)))
    else:
        dlq_frames = rejected  # the producer's original bytes: same trust zone as the input topic
    op.output("dead_letter_out", op.map("dead_letter_records", dlq_frames, t("dead_letter_records", lambda f: dead_letter_records(f, VALIDATOR_VERSION))), metrics.timed_sink("dead_letter_out", io.dead_letter))
    parquet_output("rejected_parquet", rejected, sink("rejected"))
    parquet_output("audit_parquet", audit, sink("audit"))
    parquet_output("enriched_parquet", scored, sink("enriched"))
    if io.output is not None:
        columns = list(specs["enriched"].schema.names)
        rows_out = op.filter("rows_out", scored, lambda f: f.height > 0)
        op.output("output_topic_out", op.map("output_records", rows_out, t("output_records", lambda f: json_records(f, columns, "event_id"))), metrics.timed_sink("output_topic_out", io.output))

    # Per-window cost, latency, quality and drift; alerts.
    # the window step's own pieces are counted in the "other" share of the bench's per-step table
    win = window_monitor("windows", scored, cfg.monitoring, clock=clock, recovery=state_dir is not None, partitions=SourcePartitions(io.source))
    parquet_output("metrics_parquet", win.metrics, sink("metrics"))
    parquet_output("metrics_late_parquet", win.late, sink("metrics_late"))
    parquet_output("alerts_parquet", win.alerts, sink("alerts"))
    if io.metrics is not None:
        op.output("metrics_topic_out", op.map("metrics_records", win.metrics, t("metrics_records", lambda f: json_records(f, list(f.columns), "key"))), metrics.timed_sink("metrics_topic_out", io.metrics))
    if io.alerts is not None:
        op.output("alerts_topic_out", op.map("alerts_records", win.alerts, t("alerts_records", lambda f: json_records(f, list(f.columns), "key"))), metrics.timed_sink("alerts_topic_out", io.alerts))
    export_windows(FLOW, win, cfg.monitoring)
    return flow


def _valid_rows(batch: MicroBatch) -> pl.DataFrame:
    return batch.valid


def _rejected_rows(batch: MicroBatch) -> pl.DataFrame:
    metrics.observe_rejected(FLOW, batch.rejected)
    return batch.rejected


def _counted(records: RawBatch) -> RawBatch:
    n = len(records)  # a raw frame's height or a list's length
    if n:
        metrics.observe_in(FLOW, n)
        metrics.count_input(n)
    return records
