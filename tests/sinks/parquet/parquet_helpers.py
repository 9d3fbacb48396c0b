"""Shared helpers for the Parquet sink tests: a Kafka-keyed and a window-keyed spec."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pyarrow as pa
import pytest

from driftline.sinks.parquet import KAFKA_KEY, DatasetSpec, RunInfo

T0 = datetime(2026, 3, 1, 10, 59, 0, tzinfo=timezone.utc)

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("src_topic", pa.string(), nullable=False),
        pa.field("src_partition", pa.int32(), nullable=False),
        pa.field("src_offset", pa.int64(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", "UTC")),
        pa.field("text", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
    ]
)

WINDOW_SCHEMA = pa.schema(
    [
        pa.field("window_start", pa.timestamp("ms", "UTC"), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("events", pa.int64()),
    ]
)


@pytest.fixture
def events_spec() -> DatasetSpec:
    return DatasetSpec("events", EVENTS_SCHEMA, KAFKA_KEY, "event_time")


@pytest.fixture
def window_spec() -> DatasetSpec:
    return DatasetSpec("metrics", WINDOW_SCHEMA, ("window_start", "key"), "window_start")


@pytest.fixture
def run_info() -> RunInfo:
    return RunInfo("0.1.0", "cfg123", {"sentiment": "vader-3.3.2"})


def events(offsets: list[int], *, topic: str = "t", partition: int = 0, start: datetime = T0, step_s: float = 1.0, extra: bool = True) -> pl.DataFrame:
    """A micro-batch shaped like the operators' output (extra columns included)."""
    n = len(offsets)
    df = pl.DataFrame(
        {
            "src_topic": [topic] * n,
            "src_partition": pl.Series([partition] * n, dtype=pl.Int32),
            "src_offset": pl.Series(offsets, dtype=pl.Int64),
            "event_time": pl.Series([start + timedelta(seconds=step_s * o) for o in offsets], dtype=pl.Datetime("ms", "UTC")),
            "text": [f"event {o}" for o in offsets],
            "tags": [["a", "b"]] * n,
        },
        schema_overrides={"tags": pl.List(pl.Utf8)},
    )
    if extra:
        df = df.with_columns(pl.lit(b"secret raw bytes", pl.Binary).alias("raw"))
    return df


def windows(starts: list[datetime], keys: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "window_start": pl.Series(starts, dtype=pl.Datetime("ms", "UTC")),
            "key": keys,
            "events": list(range(len(keys))),
        }
    )
