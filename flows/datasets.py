"""The datasets the flows write, with schemas composed from what each operator
publishes (never inferred from data).

Adding a dataset is adding one function here that returns a
:class:`~driftline.sinks.parquet.DatasetSpec` for a configuration, registered by
name with :func:`dataset`.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from driftline.config import PipelineConfig
from driftline.operators.batch import EVENT_SCHEMA, REJECT_SCHEMA
from driftline.models import model_output_schema
from driftline.operators.features import feature_columns, feature_schema
from driftline.operators.pii import audit_schema, pii_output_schema
from driftline.operators.sanitize import SANITIZE_COLUMNS
from collections.abc import Callable

from driftline.sinks.parquet import DatasetSpec

KAFKA_KEY = ("src_topic", "src_partition", "src_offset")

SpecFactory = Callable[[PipelineConfig], DatasetSpec]
DATASETS: dict[str, SpecFactory] = {}


def dataset(name: str) -> Callable[[SpecFactory], SpecFactory]:
    """Register a dataset spec factory under ``name``."""

    def register(factory: SpecFactory) -> SpecFactory:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = factory
        return factory

    return register


def dataset_specs(cfg: PipelineConfig) -> dict[str, DatasetSpec]:
    """Every registered dataset's spec for this configuration."""
    return {name: factory(cfg) for name, factory in DATASETS.items()}

# Columns that never reach a dataset: raw bytes and keys belong to the dead-letter path only.
NEVER_STORED = frozenset({"raw", "src_key", "field_errors"})


def arrow_schema(columns: dict[str, pl.DataType], *, required: tuple[str, ...] = ()) -> pa.Schema:
    """An explicit Arrow schema from a Polars column→dtype mapping."""
    empty = pl.DataFrame(schema=columns).to_arrow()
    fields = [f.with_nullable(f.name not in required) for f in empty.schema]
    return pa.schema(fields)


def enriched_columns(cfg: PipelineConfig) -> dict[str, pl.DataType]:
    """Columns of the ``enriched`` dataset, in order: the event, then what each stage adds."""
    cols = {name: dtype for name, dtype in EVENT_SCHEMA.items() if name not in NEVER_STORED}
    cols.update(pii_output_schema(cfg))
    cols.update(feature_columns(feature_schema(cfg.features)))
    cols.update({k: v for k, v in SANITIZE_COLUMNS.items() if k != "model_input"})  # what was sent: hash and length
    cols.update(model_output_schema(cfg.models))
    return cols


def rejected_columns(cfg: PipelineConfig) -> dict[str, pl.DataType]:
    """Columns of the ``rejected`` dataset: reasons, coordinates and the masked text."""
    return {name: dtype for name, dtype in REJECT_SCHEMA.items() if name not in NEVER_STORED}


@dataset("enriched")
def enriched_spec(cfg: PipelineConfig) -> DatasetSpec:
    return DatasetSpec(name="enriched", schema=arrow_schema(enriched_columns(cfg), required=KAFKA_KEY), key_columns=KAFKA_KEY, time_column="event_time")


@dataset("rejected")
def rejected_spec(cfg: PipelineConfig) -> DatasetSpec:
    return DatasetSpec(name="rejected", schema=arrow_schema(rejected_columns(cfg), required=KAFKA_KEY), key_columns=KAFKA_KEY, time_column="src_timestamp")


@dataset("audit")
def audit_spec(cfg: PipelineConfig) -> DatasetSpec:
    """One row per event the privacy stage saw: entity types and counts, classification,
    DLP rules fired, outcome; never a value."""
    return DatasetSpec(name="audit", schema=arrow_schema(audit_schema(cfg), required=KAFKA_KEY), key_columns=KAFKA_KEY, time_column="processed_at")


def _monitoring(name: str) -> SpecFactory:
    def factory(cfg: PipelineConfig) -> DatasetSpec:
        from driftline.flows.monitor import monitoring_specs

        return monitoring_specs(cfg)[name]

    factory.__doc__ = f"The ``{name}`` dataset of the windowed monitor (see docs/monitoring.md)."
    return factory


for _name in ("metrics", "metrics_late", "alerts"):
    dataset(_name)(_monitoring(_name))


@dataset("telemetry")
def telemetry_dataset_spec(cfg: PipelineConfig) -> DatasetSpec:
    """Masked model-call telemetry written by the monitor flow."""
    from driftline.flows.monitor import telemetry_spec

    return telemetry_spec(cfg)
