from __future__ import annotations

import pyarrow as pa
import pytest

from driftline.config import ConfigError, load_config
from driftline.sinks.parquet import KAFKA_KEY, DatasetSpec, schema_fingerprint

from parquet_helpers import EVENTS_SCHEMA, WINDOW_SCHEMA


def test_key_kind_follows_key_columns() -> None:
    assert DatasetSpec("a", EVENTS_SCHEMA, KAFKA_KEY, "event_time").key_kind == "kafka"
    assert DatasetSpec("b", WINDOW_SCHEMA, ("window_start", "key"), "window_start").key_kind == "exact"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key_columns": ("nope",)}, "column 'nope' is not in the schema"),
        ({"time_column": "text"}, "time column 'text' must be a timestamp"),
        ({"key_columns": ("src_topic", "text")}, "key column 'text' must be declared non-nullable"),
        ({"partition_by": ("hour",)}, "'hour' needs 'date'"),
        ({"partition_by": ("hour", "date")}, "ordered coarse to fine"),
        ({"partition_by": ("week",)}, "partition field 'week' is unknown"),
        ({"name": "Bad-Name"}, "must match"),
    ],
)
def test_spec_refuses_contradictions(kwargs: dict, message: str) -> None:
    args = {"name": "x", "schema": EVENTS_SCHEMA, "key_columns": KAFKA_KEY, "time_column": "event_time", **kwargs}
    with pytest.raises(ValueError, match=message):
        DatasetSpec(**args)


def test_fingerprint_ignores_metadata_but_not_nullability() -> None:
    fp = schema_fingerprint(EVENTS_SCHEMA)
    assert schema_fingerprint(EVENTS_SCHEMA.with_metadata({"a": "b"})) == fp
    changed = EVENTS_SCHEMA.set(3, pa.field("event_time", pa.timestamp("ms", "UTC"), nullable=False))
    assert schema_fingerprint(changed) != fp


def test_config_rejects_bad_partitioning_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sinks\.datasets\.enriched\.partition_by"):
        load_config(None, env={}, overrides={"sinks": {"datasets": {"enriched": {"partition_by": ["hour"]}}}})
    with pytest.raises(ConfigError, match=r"sinks\.datasets\.enriched\.flush_rowz"):
        load_config(None, env={}, overrides={"sinks": {"datasets": {"enriched": {"flush_rowz": 3}}}})
    cfg = load_config(None, env={"DRIFTLINE__SINKS__DATASETS__ENRICHED__PARTITION_BY": "[date]"})
    assert cfg.sinks.for_dataset("enriched").partition_by == ["date"]
    assert cfg.sinks.for_dataset("enriched").flush_seconds == cfg.sinks.flush_seconds == 5.0
