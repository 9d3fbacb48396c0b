"""Configuration section `features` (fleshed out by its issue)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FeaturesConfig(BaseModel):
    """Settings of the features stage."""

    model_config = ConfigDict(extra="forbid")
