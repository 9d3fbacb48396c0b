"""The datasets the flows write, with schemas composed from what each operator
publishes (never inferred from data).

Adding a dataset is adding one function here that returns a
:class:`~driftline.sinks.parquet.DatasetSpec` for a configuration, registered by
name with :func:`dataset`; the flows take their specs from :func:`dataset_specs`.

>>> from driftline.config import load_config
>>> sorted(dataset_specs(load_config(None, env={})))
['alerts', 'audit', 'enriched', 'metrics', 'metrics_late', 'rejected', 'telemetry']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl
import pyarrow as pa

from driftline.config import ConfigError, PipelineConfig
from driftline.models import model_output_schema
from driftline.operators.aggregate import late_schema, metrics_schema
from driftline.operators.alerts import alerts_schema
from driftline.operators.batch import EVENT_SCHEMA, REJECT_SCHEMA
from driftline.operators.decode_telemetry import TELEMETRY_SCHEMA
from driftline.operators.features import feature_columns, feature_schema
from driftline.operators.guardrails import guard_output_schema
from driftline.operators.pii import audit_schema, pii_output_schema
from driftline.operators.sanitize import SANITIZE_COLUMNS
from driftline.sinks.parquet import KAFKA_KEY, CommitAfter, DatasetSpec

SpecFactory = Callable[[PipelineConfig], DatasetSpec]
DATASETS: dict[str, SpecFactory] = {}

# Columns that never reach a dataset: raw bytes and keys belong to the dead-letter path only;
# the producer's traceparent is stored as its validated trace id (trace_id).
NEVER_STORED = frozenset({"raw", "src_key", "field_errors", "src_traceparent"})

#: Columns of the ``telemetry`` dataset: decoded fields (texts masked), cost and PII counts.
TELEMETRY_COLUMNS: dict[str, pl.DataType] = {
    **{k: v for k, v in TELEMETRY_SCHEMA.items() if k not in ("event_id", "source")},
    "model_cost_usd": pl.Float64,
    "pii_total": pl.Int64,
    "text_masking": pl.Utf8,
}


#: The record's trace (driftline.tracing): the producer's, or the one driftline started.
TRACE_COLUMNS: dict[str, pl.DataType] = {"trace_id": pl.Utf8}


def dataset(name: str) -> Callable[[SpecFactory], SpecFactory]:
    """Register a dataset spec factory under ``name``."""

    def register(factory: SpecFactory) -> SpecFactory:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = factory
        return factory

    return register


def dataset_specs(cfg: PipelineConfig) -> dict[str, DatasetSpec]:
    """Every registered dataset's spec for this configuration; an override under
    ``sinks.datasets`` naming no registered dataset fails here, at start-up."""
    unknown = sorted(set(cfg.sinks.datasets) - set(DATASETS))
    if unknown:
        raise ConfigError(f"sinks.datasets.{unknown[0]}: no dataset of that name (datasets: {', '.join(sorted(DATASETS))})")
    return {name: factory(cfg) for name, factory in DATASETS.items()}


def arrow_schema(columns: dict[str, pl.DataType], *, required: Sequence[str] = ()) -> pa.Schema:
    """An explicit Arrow schema from a Polars column→dtype mapping; ``required`` columns are non-nullable."""
    empty = pl.DataFrame(schema=columns).to_arrow()
    return pa.schema([f.with_nullable(f.name not in required) for f in empty.schema])


def _spec(name: str, columns: dict[str, pl.DataType], key: Sequence[str], time_column: str) -> DatasetSpec:
    return DatasetSpec(name=name, schema=arrow_schema(columns, required=key), key_columns=tuple(key), time_column=time_column)


def enriched_columns(cfg: PipelineConfig) -> dict[str, pl.DataType]:
    """Columns of the ``enriched`` dataset, in order: the event, then what each stage adds."""
    cols = {name: dtype for name, dtype in EVENT_SCHEMA.items() if name not in NEVER_STORED}
    cols.update(pii_output_schema(cfg))
    cols.update(feature_columns(feature_schema(cfg.features)))
    cols.update({k: v for k, v in SANITIZE_COLUMNS.items() if k != "model_input"})  # what was sent: hash and length
    cols.update(model_output_schema(cfg.models))
    cols.update(guard_output_schema(cfg))
    cols.update(TRACE_COLUMNS)
    return cols


def rejected_columns(cfg: PipelineConfig) -> dict[str, pl.DataType]:
    """Columns of the ``rejected`` dataset: reasons, coordinates and the masked text."""
    return {name: dtype for name, dtype in REJECT_SCHEMA.items() if name not in NEVER_STORED}


@dataset("enriched")
def enriched_spec(cfg: PipelineConfig) -> DatasetSpec:
    """Validated, masked, scored events (enrich flow)."""
    return _spec("enriched", enriched_columns(cfg), KAFKA_KEY, "event_time")


@dataset("rejected")
def rejected_spec(cfg: PipelineConfig) -> DatasetSpec:
    """Refused records: stage, reasons, coordinates, masked text; never the raw bytes."""
    return _spec("rejected", rejected_columns(cfg), KAFKA_KEY, "src_timestamp")


@dataset("audit")
def audit_spec(cfg: PipelineConfig) -> DatasetSpec:
    """One row per event the privacy stage saw: entity types and counts, classification,
    DLP rules fired, outcome; never a value."""
    return _spec("audit", audit_schema(cfg), KAFKA_KEY, "processed_at")


#: The column that names the flow of a window row: both flows write the window
#: datasets (and topics), so the flow is part of their natural keys.
FLOW_COLUMN = "flow"

#: Datasets whose rows commit only after the row of another dataset they refer to: an
#: alert after its window's ``metrics`` row (a reader never sees an alert without it).
#: The columns are that row's natural key, flow included.
COMMIT_ORDER: dict[str, CommitAfter] = {"alerts": CommitAfter("metrics", ("window_start", "key", FLOW_COLUMN))}


def _window_spec(name: str, columns: dict[str, pl.DataType], key: Sequence[str]) -> DatasetSpec:
    return _spec(name, {FLOW_COLUMN: pl.Utf8, **columns}, (*key, FLOW_COLUMN), "window_start")


@dataset("metrics")
def metrics_spec(cfg: PipelineConfig) -> DatasetSpec:
    """One row per flow, window and key: cost, latency, quality, drift (see docs/monitoring.md)."""
    return _window_spec("metrics", metrics_schema(cfg.monitoring), ("window_start", "key"))


@dataset("metrics_late")
def metrics_late_spec(cfg: PipelineConfig) -> DatasetSpec:
    """Events that arrived after their window closed, counted against it."""
    return _window_spec("metrics_late", late_schema(cfg.monitoring), ("window_start", "key", "first_id"))


@dataset("alerts")
def alerts_spec(cfg: PipelineConfig) -> DatasetSpec:
    """Alert firing and resolved events."""
    return _window_spec("alerts", alerts_schema(cfg.monitoring), ("rule", "key", "window_start", "state"))


@dataset("telemetry")
def telemetry_spec(cfg: PipelineConfig) -> DatasetSpec:
    """Masked model-call telemetry written by the monitor flow."""
    return _spec("telemetry", TELEMETRY_COLUMNS, KAFKA_KEY, "event_time")
