"""Dataset specifications.

A dataset is one folder under ``sinks.root`` holding immutable Parquet files plus a
manifest, described by one :class:`DatasetSpec` (the flows register theirs in
``flows/datasets.py``):

>>> import pyarrow as pa
>>> spec = DatasetSpec(
...     name="doc_example",
...     schema=pa.schema([("window_start", pa.timestamp("ms", "UTC"), False), ("key", pa.string(), False), ("n", pa.int64())]),
...     key_columns=("window_start", "key"),
...     time_column="window_start",
... )
>>> spec.key_kind
'exact'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from driftline.config.sinks import check_partition_layout

KAFKA_KEY: tuple[str, str, str] = ("src_topic", "src_partition", "src_offset")
"""Key columns of datasets keyed by Kafka coordinates (enriched, rejected, telemetry)."""


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_WRITER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]{0,120}$")


def writer_id(name: str | None, partition: int | str) -> str:
    """The id of the writer of sink partition ``partition`` for the writer name ``name``.

    Every manifest entry, staged file and window-keyed file name of a dataset carries its
    writer's id, and each id must belong to one writer at a time: the flows name theirs
    after the flow and its input topic (two flows, or two deployments reading different
    topics, share a ``sinks.root`` without colliding).  ``None`` gives the bare ``p<N>``
    of earlier versions.

    >>> writer_id("enrich.events", 1), writer_id(None, 0)
    ('enrich.events-p1', 'p0')
    >>> writer_id("bad-name", 0)
    Traceback (most recent call last):
    ...
    ValueError: writer name 'bad-name' must match ^[A-Za-z0-9][A-Za-z0-9._]{0,120}$ (no '-': it separates the partition and the commit sequence)
    """
    if name is None:
        return f"p{partition}"
    if not _WRITER_NAME_RE.match(name):
        raise ValueError(f"writer name {name!r} must match {_WRITER_NAME_RE.pattern} (no '-': it separates the partition and the commit sequence)")
    return f"{name}-p{partition}"


def writer_name(*parts: str) -> str:
    """A writer name from free text such as a flow and a Kafka topic (``-`` becomes ``_``).

    >>> writer_name("monitor", "model-calls")
    'monitor.model_calls'
    """
    return ".".join(re.sub(r"[^A-Za-z0-9._]", "_", p) for p in parts)


def _canonical_type(t: pa.DataType) -> str:
    """Type text that survives a Parquet round trip (list child names are not kept by Parquet)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        prefix = "large_list" if (pa.types.is_large_list(t) or pa.types.is_large_list_view(t)) else "list"
        return f"{prefix}<{_canonical_type(t.value_type)}>"
    if pa.types.is_struct(t):
        inner = ",".join(f"{t.field(i).name}:{_canonical_type(t.field(i).type)}" for i in range(t.num_fields))
        return f"struct<{inner}>"
    return str(t)


def schema_fingerprint(schema: pa.Schema) -> str:
    """A short stable hash of field names, types and nullability (metadata and list child names ignored)."""
    parts = [f"{f.name}:{_canonical_type(f.type)}:{'null' if f.nullable else 'notnull'}" for f in schema]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset holds and how it is keyed.

    ``schema`` is the explicit Arrow schema written to every file (published by the
    operators, never inferred from data).  ``key_columns`` is the natural key; when it
    starts with :data:`KAFKA_KEY` the dataset is *Kafka-keyed* (exactly-once state is a
    per topic-partition offset watermark), otherwise keys are tracked exactly.
    ``time_column`` drives the default Hive partitions ``date=YYYY-MM-DD/hour=HH``.
    """

    name: str
    schema: pa.Schema
    key_columns: tuple[str, ...]
    time_column: str
    partition_by: tuple[str, ...] = ("date", "hour")
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"dataset name {self.name!r} must match {_NAME_RE.pattern} (it names a folder and a SQL view)")
        if not isinstance(self.schema, pa.Schema):
            raise TypeError(f"dataset {self.name!r}: schema must be a pyarrow.Schema, got {type(self.schema).__name__}")
        object.__setattr__(self, "key_columns", tuple(self.key_columns))
        object.__setattr__(self, "partition_by", tuple(self.partition_by))
        names = set(self.schema.names)
        if not self.key_columns:
            raise ValueError(f"dataset {self.name!r}: key_columns must not be empty")
        for col in (*self.key_columns, self.time_column):
            if col not in names:
                raise ValueError(f"dataset {self.name!r}: column {col!r} is not in the schema (columns: {sorted(names)})")
        for col in self.key_columns:
            if self.schema.field(col).nullable:
                raise ValueError(f"dataset {self.name!r}: key column {col!r} must be declared non-nullable")
        if not pa.types.is_timestamp(self.schema.field(self.time_column).type):
            raise ValueError(f"dataset {self.name!r}: time column {self.time_column!r} must be a timestamp, got {self.schema.field(self.time_column).type}")
        check_partition_by(self.partition_by, self.schema, f"dataset {self.name!r}")

    @property
    def key_kind(self) -> Literal["kafka", "exact"]:
        """``kafka`` when keyed by Kafka coordinates (offset watermarks), else ``exact``."""
        return "kafka" if self.key_columns[:3] == KAFKA_KEY else "exact"

    @property
    def fingerprint(self) -> str:
        return schema_fingerprint(self.schema)

    def with_partition_by(self, partition_by: tuple[str, ...] | list[str]) -> DatasetSpec:
        return DatasetSpec(self.name, self.schema, self.key_columns, self.time_column, tuple(partition_by), self.description)


def check_partition_by(partition_by: tuple[str, ...] | list[str], schema: pa.Schema | None, where: str) -> None:
    """Refuse partition layouts that contradict themselves or clash with a column; the message names ``where``."""
    check_partition_layout(partition_by, where)
    for p in partition_by:
        if schema is not None and p in schema.names:
            raise ValueError(f"{where}: partition field {p!r} clashes with a column of the same name")


@dataclass(frozen=True)
class RunInfo:
    """Lineage recorded in every manifest entry."""

    pipeline_version: str
    config_hash: str
    model_versions: Mapping[str, str] = field(default_factory=dict)
