"""Output settings: where datasets land and when files are committed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SinksConfig(BaseModel):
    """Parquet datasets."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field("var/output", description="Folder or fsspec URI (s3://bucket/prefix) holding every dataset.")
    flush_rows: int = Field(50_000, ge=1, description="Commit a file once it holds this many rows.")
    flush_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Commit a file once its buffered rows reach this many bytes.")
    flush_seconds: float = Field(10.0, gt=0, description="Commit a file once its oldest buffered row has waited this long.")
