"""Output settings: where datasets land, their layout, and when files are committed.

Per-dataset overrides live under ``sinks.datasets.<name>``; a key left unset falls
back to the section default.  Settings that contradict each other (e.g. ``hour``
partitions without ``date``) fail at start-up with a message naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

#: fsspec option names that carry credentials (s3fs, gcsfs, adlfs, ...): refused in
#: ``storage_options`` so they only come from ``storage_secrets``.
CREDENTIAL_OPTIONS: frozenset[str] = frozenset(
    ("key", "secret", "token", "password", "session_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "account_key", "sas_token", "client_secret", "connection_string", "credentials")
)

PARTITION_FIELDS: tuple[str, ...] = ("date", "hour")
"""Hive partition fields derived from a dataset's time column, coarse to fine."""


def check_partition_layout(partition_by: tuple[str, ...] | list[str], where: str = "partition_by") -> None:
    """Refuse partition layouts that contradict themselves; the message names ``where``."""
    seen: set[str] = set()
    for p in partition_by:
        if p not in PARTITION_FIELDS:
            raise ValueError(f"{where}: partition field {p!r} is unknown (choose from {list(PARTITION_FIELDS)})")
        if p in seen:
            raise ValueError(f"{where}: partition field {p!r} is listed twice")
        seen.add(p)
    if "hour" in seen and "date" not in seen:
        raise ValueError(f"{where}: partition field 'hour' needs 'date' before it (hour alone repeats every day)")
    if list(partition_by) != [p for p in PARTITION_FIELDS if p in seen]:
        raise ValueError(f"{where}: partition fields must be ordered coarse to fine ({list(PARTITION_FIELDS)}), got {list(partition_by)}")


class DatasetSinkConfig(BaseModel):
    """Overrides for one dataset (unset keys use the ``sinks`` defaults)."""

    model_config = ConfigDict(extra="forbid")

    partition_by: list[str] | None = Field(
        None, description="Hive partition fields from the dataset's time column: any ordered subset of [date, hour]; [] for none. Default: the dataset's own (date, hour)."
    )
    flush_rows: int | None = Field(None, ge=1, description="Override of sinks.flush_rows for this dataset.")
    flush_bytes: int | None = Field(None, ge=1024, description="Override of sinks.flush_bytes for this dataset.")
    flush_seconds: float | None = Field(None, gt=0, description="Override of sinks.flush_seconds for this dataset.")

    @field_validator("partition_by")
    @classmethod
    def _v_partition(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_partition_layout(value)
        return value


class SinksConfig(BaseModel):
    """Parquet datasets."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field("var/output", description="Folder or fsspec URI (s3://bucket/prefix, gs://, abfs://, memory://) holding every dataset.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Options passed to the fsspec file system of a URI root (e.g. endpoint_url, region_name); ignored for local folders. Credentials go in storage_secrets."
    )
    storage_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Credential options of the fsspec file system (key, secret, token, ...), merged over storage_options (secret: $DRIFTLINE__SINKS__STORAGE_SECRETS__<OPTION>, ..._FILE or the secrets directory).",
    )
    flush_rows: int = Field(50_000, ge=1, description="Commit a file once its topic-partition (or dataset) buffer holds this many rows.")
    flush_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Commit once the buffered rows reach this many bytes (in-memory Arrow size, before compression).")
    flush_seconds: float = Field(5.0, gt=0, description="Commit once the oldest buffered row has waited this long, so Parquet lags Kafka by a bounded time.")
    row_group_rows: int = Field(122_880, ge=1_024, description="Rows per Parquet row group (DuckDB's scan unit); files smaller than this hold one row group.")
    compression: Literal["zstd"] = Field("zstd", description="Parquet compression codec (zstd only: the datasets promise it).")
    compression_level: int = Field(3, ge=1, le=22, description="zstd level for Parquet pages.")
    partitions: int = Field(
        1, ge=1, le=256, description="Sink partitions per dataset (Kafka-keyed rows are routed by topic-partition: a multiple of the worker count writes them on the worker of their model calls). Do not change while a recovery folder holds state."
    )
    fsync: bool = Field(True, description="fsync files, manifest entries and folders on local disks (turning it off loses the crash guarantee on power loss).")
    datasets: dict[str, DatasetSinkConfig] = Field(default_factory=dict, description="Per-dataset overrides keyed by dataset name.")

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        found = sorted(k for k in value if k.lower() in CREDENTIAL_OPTIONS)
        if found:
            raise ValueError(f"{', '.join(found)}: credentials are secrets; set $DRIFTLINE__SINKS__STORAGE_SECRETS__{found[0].upper()} (or ..._FILE) instead")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SinksConfig:
        if not self.root.strip():
            raise ValueError("root must not be empty")
        return self

    def fsspec_options(self) -> dict[str, Any]:
        """``storage_options`` with the secrets revealed over them: what the file system
        is opened with.  Holds credentials in clear: never log it."""
        return {**self.storage_options, **{k: v.get_secret_value() for k, v in self.storage_secrets.items()}}

    def for_dataset(self, name: str) -> DatasetSinkConfig:
        """Effective settings of dataset ``name`` (overrides merged over defaults, partition_by left None if unset)."""
        ds = self.datasets.get(name, DatasetSinkConfig())
        return DatasetSinkConfig(
            partition_by=ds.partition_by,
            flush_rows=ds.flush_rows or self.flush_rows,
            flush_bytes=ds.flush_bytes or self.flush_bytes,
            flush_seconds=ds.flush_seconds or self.flush_seconds,
        )
