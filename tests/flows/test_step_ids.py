"""Step ids are the recovery contract: Bytewax keys every snapshot (window state, model
batches, sink buffers, Kafka offsets) by the step's id, so a renamed or removed step
silently drops its state on the next start from an existing recovery folder.

``step_ids.json`` lists every step id of both flows, wired to Kafka, with and without
masked dead letters (the only options that add or remove steps besides the webhook,
which is on here).  A change to this list must be deliberate: adding a step means adding
its id to the file; renaming or removing one breaks every deployed recovery folder.
The only exception is a step that never stored a snapshot (a stateless map): it may be
retired by moving its id to the file's ``retired`` list (with why), and a retired id is
never used again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bytewax.dataflow import Dataflow

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.flows.enrich import kafka_io as enrich_io
from driftline.flows.monitor import build_monitor_flow
from driftline.flows.monitor import kafka_io as monitor_io

GOLDEN = Path(__file__).with_name("step_ids.json")


def step_ids(flow: Dataflow) -> list[str]:
    out: list[str] = []

    def walk(steps: list) -> None:
        for s in steps:
            out.append(s.step_id)
            walk(s.substeps)

    walk(flow.substeps)
    return sorted(out)


@pytest.mark.parametrize("mask", ["true", "false"])
def test_step_ids_are_the_recovery_contract(mask: str, tmp_path: Path) -> None:
    env = {
        "DRIFTLINE__SINKS__ROOT": str(tmp_path / "out"),
        "DRIFTLINE__PRIVACY__MASK_DEAD_LETTER": mask,
        "DRIFTLINE__MONITORING__ALERTS__WEBHOOK_URL": "http://127.0.0.1:9/hook",
    }
    cfg = load_config(None, env=env)
    golden = json.loads(GOLDEN.read_text())
    built = {
        f"enrich mask={mask}": step_ids(build_enrich_flow(cfg, io=enrich_io(cfg, drain=True))),
        f"monitor mask={mask}": step_ids(build_monitor_flow(cfg, io=monitor_io(cfg, drain=True))),
    }
    retired = set(golden["retired"]["ids"])
    for name, ids in built.items():
        assert not retired & set(ids), f"{name}: retired step ids used again: {sorted(retired & set(ids))}"
        assert not retired & set(golden[name]), f"{name}: {GOLDEN.name} lists retired step ids as live: {sorted(retired & set(golden[name]))}"
        removed = sorted(set(golden[name]) - set(ids))
        added = sorted(set(ids) - set(golden[name]))
        assert not removed, f"{name}: step ids removed or renamed (breaks existing recovery folders): {removed}"
        assert not added, f"{name}: new step ids {added}: add them to {GOLDEN.name} (and never rename them later)"
