from __future__ import annotations

import io

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.sinks.parquet import SinkSchemaError, conform, encode_parquet
from driftline.sinks.parquet.format import read_file_metadata

from parquet_helpers import EVENTS_SCHEMA, events


def test_conform_drops_extra_columns_and_keeps_declared_types(events_spec) -> None:
    table = conform(events([1, 2]), events_spec, "out")
    assert table.schema == EVENTS_SCHEMA
    assert "raw" not in table.column_names
    assert table.column("src_offset").to_pylist() == [1, 2]


def test_missing_nullable_column_becomes_null(events_spec) -> None:
    table = conform(events([1]).drop("tags", "text"), events_spec, "out")
    assert table.column("tags").to_pylist() == [None]
    assert table.column("text").null_count == 1


def test_missing_required_column_names_step_dataset_and_column(events_spec) -> None:
    with pytest.raises(SinkSchemaError, match=r"step 'out', dataset 'events': column 'src_offset'.*missing"):
        conform(events([1]).drop("src_offset"), events_spec, "out")


def test_type_of_another_kind_is_an_error(events_spec) -> None:
    bad = events([1]).with_columns(pl.col("src_offset").cast(pl.Utf8))
    with pytest.raises(SinkSchemaError, match=r"column 'src_offset' has type large_string"):
        conform(bad, events_spec, "out")


def test_lossy_cast_is_an_error(events_spec) -> None:
    bad = events([1]).with_columns(pl.lit(2**40, pl.Int64).alias("src_partition"))
    with pytest.raises(SinkSchemaError, match=r"column 'src_partition' cannot be cast"):
        conform(bad, events_spec, "out")


def test_null_in_required_column_is_an_error(events_spec) -> None:
    bad = events([1]).with_columns(pl.lit(None, pl.Utf8).alias("src_topic"))
    with pytest.raises(SinkSchemaError, match=r"'src_topic' is not nullable"):
        conform(bad, events_spec, "out")


def test_not_a_frame_is_named(events_spec) -> None:
    with pytest.raises(SinkSchemaError, match="received dict"):
        conform({"a": 1}, events_spec, "out")  # type: ignore[arg-type]


def test_encoding_uses_zstd_row_groups_and_lineage(events_spec) -> None:
    table = conform(events(list(range(3000))), events_spec, "out")
    data = encode_parquet(table, row_group_rows=1024, compression_level=3, metadata={"driftline.dataset": "events", "driftline.key_ranges": '{"a": [1, 2]}'})
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_row_groups == 3
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    assert meta.row_group(0).column(2).statistics.has_min_max
    rows, schema, lineage = read_file_metadata(data)
    assert rows == 3000
    assert schema.remove_metadata() == EVENTS_SCHEMA
    assert lineage == {"dataset": "events", "key_ranges": {"a": [1, 2]}}
    assert pa.types.is_string(schema.field("text").type)


def test_fingerprint_survives_the_parquet_round_trip(events_spec) -> None:
    from driftline.sinks.parquet import schema_fingerprint

    schema = pa.schema([pa.field("l", pa.large_list(pa.large_string())), pa.field("s", pa.list_(pa.struct([("k", pa.string())])))])
    data = encode_parquet(pa.Table.from_pylist([{"l": ["a"], "s": [{"k": "v"}]}], schema=schema), row_group_rows=1024, compression_level=3, metadata={})
    _rows, back, _ = read_file_metadata(data)
    assert str(back.field("l").type) != str(schema.field("l").type)  # Parquet renames the list child
    assert schema_fingerprint(back) == schema_fingerprint(schema)
