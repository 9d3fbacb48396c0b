"""Configuration section `privacy` (fleshed out by its issue)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PrivacyConfig(BaseModel):
    """Settings of the privacy stage."""

    model_config = ConfigDict(extra="forbid")
