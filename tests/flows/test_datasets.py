from __future__ import annotations

import pytest

from driftline.config import load_config
from driftline.flows.datasets import NEVER_STORED, dataset, dataset_specs


def test_every_dataset_has_an_explicit_keyed_schema() -> None:
    specs = dataset_specs(load_config(None, env={}))
    assert set(specs) == {"enriched", "rejected", "audit", "metrics", "metrics_late", "alerts", "telemetry"}
    for name, spec in specs.items():
        assert spec.name == name
        assert all(not spec.schema.field(c).nullable for c in spec.key_columns)
        assert NEVER_STORED.isdisjoint(spec.schema.names), f"{name} would store raw bytes or keys"


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        dataset("enriched")(lambda cfg: None)  # type: ignore[arg-type,return-value]
