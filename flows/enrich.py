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
>>> io = EnrichIO(micro_batch_source(raw_batches([b"not json"])), dlq)
>>> run_main(build_enrich_flow(cfg, io=io))
>>> [dict(h)["driftline.reason_codes"] for _, _, h in dlq.items[0]]
[b'["bad_json"]']
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow

from driftline import __version__, metrics, tracing
from driftline.clock import Clock, SystemClock
from driftline.config import ConfigError, PipelineConfig
from driftline.flows.common import FlowBuilder, FlowIO
from driftline.flows.common import kafka_io as flow_kafka_io
from driftline.models import ModelService
from driftline.operators.ahead import STAGE_THREADS, run_ahead
from driftline.operators.batch import MicroBatch
from driftline.operators.decode import RawBatch, decode_batch
from driftline.operators.features import FeatureEngine, features_batch
from driftline.operators.guardrails import OutputGuard, guard_output_schema
from driftline.operators.model_call import model_batch_key, model_call_builder
from driftline.operators.pii import PiiMasker, load_pseudonym_key, mask_batch_audited
from driftline.operators.pii.operator import entities_for
from driftline.operators.sanitize import Sanitizer, sanitize_frame
from driftline.operators.validation import VALIDATOR_VERSION, Validator, validate_batch
from driftline.runner import resolve_state_paths
from driftline.sinks.parquet import RunInfo

FLOW = "enrich"

#: The enrich flow's edges (see :class:`~driftline.flows.common.FlowIO`); ``output`` takes the scored rows as Kafka records.
EnrichIO = FlowIO


def kafka_io(cfg: PipelineConfig, *, drain: bool) -> FlowIO:
    """The production edges: ``kafka.input_topic`` in; the output, dead-letter, metrics and alerts topics out."""
    return flow_kafka_io(cfg, FLOW, cfg.kafka.input_topic, drain=drain, output_topic=cfg.kafka.output_topic, group_id=f"driftline-{FLOW}")


def build_enrich_flow(
    cfg: PipelineConfig,
    *,
    io: FlowIO | None = None,
    drain: bool = False,
    clock: Clock | None = None,
    state_dir: str | Path | None = None,
    parquet: bool = True,
    stage_thread: bool = True,
) -> Dataflow:
    """Wire the enrich dataflow.  Everything heavy (rule compilation, pattern
    compilation, model loading) happens here, at start-up, so bad configuration fails
    before the first record.

    ``state_dir`` holds the flow's own durable state besides Bytewax's snapshots (the
    model call ledger); pass the recovery folder so both travel together.  Without one
    the run has no recovery folder: windows still open when a drained input ends are
    emitted (``monitoring.end_of_input``).

    ``stage_thread`` runs the stateless stages (decode to sanitize) on a helper thread per
    worker, ahead of the model calls, windows and sinks (:mod:`driftline.operators.ahead`);
    False runs them on the worker thread.  The outputs are the same either way.
    """
    clock = clock or SystemClock()
    cfg = resolve_state_paths(cfg, state_dir)
    validator = Validator.from_config(cfg.validation)
    masker = PiiMasker.from_config(cfg.privacy, load_pseudonym_key(cfg.privacy, cfg.mode))
    features = FeatureEngine.from_config(cfg.features)
    sanitizer = Sanitizer.from_config(cfg.features, masker)
    guard = OutputGuard.from_config(cfg, masker)
    guard_schema = guard_output_schema(cfg)
    models = ModelService(cfg.models, clock, answer_check=guard.tier_check())
    metrics.configure(cfg.monitoring.metrics)
    metrics.watch_budgets(models.budgets)
    run_info = RunInfo(pipeline_version=__version__, config_hash=cfg.config_hash(), model_versions={t.name: t.backend.model for t in models.tiers})
    fb = FlowBuilder(FLOW, cfg, io or kafka_io(cfg, drain=drain), clock=clock, state_dir=state_dir, run_info=run_info, topic=cfg.kafka.input_topic, parquet=parquet)
    try:
        cfg.monitoring.check_drift_columns(fb.specs["enriched"].schema.names)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    # per-step timers (on with $DRIFTLINE_STEP_TIMERS) and spans (tracing.enabled); the function itself otherwise
    t = tracing.step
    # The stateless stages (up to the model inputs) run on row ranges spread over every worker (Piece.map applies a
    # stage to a piece's rows; each stage is timed and traced on the rows themselves), on each worker's helper
    # thread ahead of the rest of the flow (operators/ahead.py); "reorder" brings each partition's rows back in
    # offset order.
    decode = t("decode", lambda recs: _decoded(fb.counted(recs), cfg, clock))
    validate = t("validate", lambda b: validate_batch(b, validator, clock.now()))
    mask = t("mask_pii", lambda b: mask_batch_audited(b, masker))
    featured = t("features", lambda pair: (features_batch(pair[0], features), pair[1]))
    sanitized = t("sanitize", lambda pair: (dataclasses.replace(pair[0], valid=sanitize_frame(pair[0].valid, sanitizer)), pair[1]))
    pieces, headers = fb.spread()
    stages = lambda pc: pc.map(decode).map(validate).map(mask).map(featured).map(sanitized)  # noqa: E731
    pieces = run_ahead("stages", pieces, stages, threads=STAGE_THREADS if stage_thread else None)
    masked = fb.in_order(pieces, headers)
    audit = op.map("audit_rows", masked, lambda pair: pair[1])
    batches = op.map("masked_batch", masked, lambda pair: pair[0])
    entities = entities_for(cfg)
    op.inspect("pii_metrics", batches, lambda _step, b: metrics.observe_pii(FLOW, metrics.pii_counts(b.valid, entities)))

    rejected = op.map("rejected_rows", batches, t("rejected_rows", _rejected_rows))
    valid = op.map("valid_rows", batches, _valid_rows)

    # Model calls: keyed by input partition (spread over the workers, each key batching its
    # own rows by count or waiting time); idle ticks (empty frames) bypass the batcher so
    # time-based file flushes downstream keep moving.
    keyed = op.key_on("key_models", op.filter("rows_for_models", valid, lambda f: f.height > 0), model_batch_key)
    called = op.stateful_batch("model_call", keyed, tracing.logic("model_call", model_call_builder("model_call", models, cfg.models.batching, clock)))
    results = op.map("model_results", called, lambda kv: metrics.observe_out(FLOW, kv[1].results))
    # output guardrails: answers masked, checked and decided on before anything is stored or sent
    results = op.map("guardrails", results, t("guardrails", lambda f: guard.apply(f, guard_schema)))
    ticks = op.filter("idle_ticks", valid, lambda f: f.height == 0)
    scored = op.merge("scored", results, ticks)

    fb.dead_letters(rejected, masker, VALIDATOR_VERSION)
    fb.dataset("rejected", rejected)
    fb.dataset("audit", audit)
    fb.dataset("enriched", scored)
    if fb.io.output is not None:
        rows_out = op.filter("rows_out", scored, lambda f: f.height > 0)
        fb.records_out("output_topic_out", "output_records", rows_out, fb.io.output, "event_id", columns=fb.specs["enriched"].schema.names)

    # Per-window cost, latency, quality and drift; alerts.
    # the window step's own pieces are counted in the "other" share of the bench's per-step table
    fb.windows(scored)
    return fb.finish()


def _decoded(records: RawBatch, cfg: PipelineConfig, clock: Clock) -> MicroBatch:
    """Decode a poll and give its rows their trace context (:func:`driftline.tracing.trace_batch`)."""
    start = time.time_ns()
    return tracing.trace_batch(decode_batch(records, cfg.decode, clock.now()), start, FLOW)


def _valid_rows(batch: MicroBatch) -> pl.DataFrame:
    return batch.valid


def _rejected_rows(batch: MicroBatch) -> pl.DataFrame:
    metrics.observe_rejected(FLOW, batch.rejected)
    return batch.rejected
