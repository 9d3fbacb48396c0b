"""Reduced `make torture-compact`: the enrich flow tails a topic on the real broker with a
short flush_seconds while `driftline compact` runs beside it and is SIGKILLed at random
moments inside its commits; the same checks as the 10-minute run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

_SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "torture_compact.py"


def test_compaction_beside_a_running_flow_with_kills(kafka_bootstrap: str, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("torture_compact", _SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    res = mod.torture(minutes=0.5, rate=200, flush_seconds=0.5, bootstrap=kafka_bootstrap, workdir=tmp_path, compact_every=8.0)
    assert res.compactions_run >= 3 and res.compactions_killed >= 2, res
    assert res.verify_problems == [], res.verify_problems
    assert res.final_kill_verified, res  # verify accepted the killed state, rows identical
    assert res.query_identical and res.final_verify_ok, res
    assert res.reduction >= 10, res
