"""Configuration section `monitoring` (fleshed out by its issue)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MonitoringConfig(BaseModel):
    """Settings of the monitoring stage."""

    model_config = ConfigDict(extra="forbid")
