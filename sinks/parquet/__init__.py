"""Immutable, exactly-once Parquet datasets (see docs/datasets.md).

Public API::

    from driftline.sinks.parquet import DatasetSpec, ParquetDatasetSink, RunInfo, parquet_output
"""

from driftline.sinks.parquet.format import SinkSchemaError, conform, encode_parquet
from driftline.sinks.parquet.manifest import FileEntry, ManifestEntry, ManifestError, load_entries, roll_forward
from driftline.sinks.parquet.sink import CommitAfter, ParquetDatasetSink, ParquetSinkPartition, parquet_output
from driftline.sinks.parquet.spec import (
    KAFKA_KEY,
    DatasetSpec,
    RunInfo,
    schema_fingerprint,
)
from driftline.sinks.parquet.store import FsspecStore, LocalStore, Store, open_store
from driftline.sinks.parquet.writer import DatasetWriter, SinkCommitError, WriterState

__all__ = [
    "KAFKA_KEY",
    "CommitAfter",
    "DatasetSpec",
    "DatasetWriter",
    "FileEntry",
    "FsspecStore",
    "LocalStore",
    "ManifestEntry",
    "ManifestError",
    "ParquetDatasetSink",
    "ParquetSinkPartition",
    "RunInfo",
    "SinkCommitError",
    "SinkSchemaError",
    "Store",
    "WriterState",
    "conform",
    "encode_parquet",
    "load_entries",
    "open_store",
    "parquet_output",
    "roll_forward",
    "schema_fingerprint",
]
