"""Configuration section `validation` (fleshed out by its issue)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ValidationConfig(BaseModel):
    """Settings of the validation stage."""

    model_config = ConfigDict(extra="forbid")
