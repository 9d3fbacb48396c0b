"""Parquet format: conform micro-batches to the dataset schema and encode files.

The schema written is always the dataset's declared schema: columns the schema does
not list are dropped (``raw`` bytes never reach a file), missing nullable columns
become nulls, and a missing non-nullable column or a type of another kind is an error
naming the step, the dataset and the column.  Lossless casts between representations
of the same kind (``large_string`` -> ``string``, ``int32`` -> ``int64``) are allowed.
"""

from __future__ import annotations

import io
import json
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from driftline.sinks.parquet.spec import DatasetSpec


class SinkSchemaError(ValueError):
    """A micro-batch does not fit the dataset schema."""


def _kind(t: pa.DataType) -> Any:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return ("timestamp", t.tz is not None)
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_duration(t):
        return "duration"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return ("list", _kind(t.value_type))
    if pa.types.is_struct(t):
        return ("struct", tuple((t.field(i).name, _kind(t.field(i).type)) for i in range(t.num_fields)))
    if pa.types.is_null(t):
        return "null"
    return str(t)


def conform(frame: pl.DataFrame, spec: DatasetSpec, step_id: str) -> pa.Table:
    """Return ``frame`` as an Arrow table with exactly ``spec.schema`` (see module doc)."""
    where = f"step {step_id!r}, dataset {spec.name!r}"
    if not isinstance(frame, pl.DataFrame):
        raise SinkSchemaError(f"{where}: expected a polars.DataFrame micro-batch, received {type(frame).__name__}")
    received = frame.columns  # a new list on every access: read once
    have = set(received)
    present = [f.name for f in spec.schema if f.name in have]
    table = frame[present].to_arrow() if present else None  # indexing by names: no query plan
    n = frame.height
    arrays = []
    for f in spec.schema:
        if f.name not in have:
            if not f.nullable and n > 0:
                raise SinkSchemaError(f"{where}: column {f.name!r} ({f.type}, not nullable) is missing from the micro-batch (received columns {received})")
            arrays.append(pa.nulls(n, f.type))
            continue
        assert table is not None
        col = table.column(f.name)
        if col.type != f.type:
            src_kind, dst_kind = _kind(col.type), _kind(f.type)
            if src_kind != dst_kind and src_kind != "null":
                raise SinkSchemaError(f"{where}: column {f.name!r} has type {col.type}, the dataset schema says {f.type}")
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SinkSchemaError(f"{where}: column {f.name!r} cannot be cast from {col.type} to {f.type}: {exc}") from None
        if not f.nullable and col.null_count:
            raise SinkSchemaError(f"{where}: column {f.name!r} is not nullable but {col.null_count} row(s) are null")
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=spec.schema)


def encode_parquet(table: pa.Table, *, row_group_rows: int, compression_level: int, metadata: dict[str, str]) -> bytes:
    """Encode one file: zstd pages, statistics and page index for pruning, lineage metadata."""
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in metadata.items()})
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="zstd",
        compression_level=compression_level,
        row_group_size=row_group_rows,
        write_statistics=True,
        write_page_index=True,
        use_dictionary=True,
    )
    return buf.getvalue()


def read_file_metadata(data: bytes) -> tuple[int, pa.Schema, dict[str, Any]]:
    """Row count, Arrow schema and driftline lineage metadata of encoded Parquet bytes."""
    pf = pq.ParquetFile(io.BytesIO(data))
    schema = pf.schema_arrow
    raw = schema.metadata or {}
    lineage = {}
    for k, v in raw.items():
        key = k.decode()
        if key.startswith("driftline."):
            text = v.decode()
            lineage[key[len("driftline.") :]] = json.loads(text) if text[:1] in "{[" else text
    return pf.metadata.num_rows, schema, lineage
