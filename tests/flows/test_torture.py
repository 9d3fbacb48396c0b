"""Reduced `make torture` (issue 14): 20,000 events, 8 kills of the whole process group
(during start-up, at Parquet and Kafka commit points, at random moments), one recovery
folder; every Parquet dataset, the output, dead-letter, metrics and alerts topics
(read_committed), the windows and the alerts equal an uninterrupted run's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "torture.py"


def test_torture_kills_change_no_output(kafka_bootstrap: str, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("torture", _SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    res = mod.torture(events=20_000, kills=8, bootstrap=kafka_bootstrap, workdir=tmp_path, flush_seconds=1.0, epoch_interval=1.0, seed=21)
    print("\n" + mod.report(res))
    assert sum(res.killed().values()) >= 6, res.runs  # the kills really happened mid-run
    assert all(c.equal for c in res.comparisons), [c for c in res.comparisons if not c.equal]
    assert all(res.invariants.values()), res.invariants
    assert res.verify_ok
