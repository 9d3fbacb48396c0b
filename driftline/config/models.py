"""Configuration section `models` (fleshed out by its issue)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelsConfig(BaseModel):
    """Settings of the models stage."""

    model_config = ConfigDict(extra="forbid")
