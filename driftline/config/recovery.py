"""Recovery settings: the shape of the Bytewax recovery store.

The recovery folder itself is given per run (``driftline run --recovery-dir``); this
section fixes what must not change once the folder exists.

>>> RecoveryConfig().partitions
8
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RecoveryConfig(BaseModel):
    """How the Bytewax recovery store is created."""

    model_config = ConfigDict(extra="forbid")

    partitions: int = Field(
        8,
        ge=1,
        le=1024,
        description=(
            "Recovery partitions (part-<i>.sqlite3) created in a new recovery folder: the most workers you will ever run "
            "(all processes together). Fixed once the folder exists; a folder keeps the count it was created with."
        ),
    )
