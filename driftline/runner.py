"""Run a flow with Bytewax: recovery folder, epoch interval, logging, metrics.

Bytewax snapshots every stateful step and the Kafka offsets at the end of each epoch
into the recovery folder; after a crash, ``driftline run`` with the same folder resumes
from the last snapshot and replays the input since then.  The sinks make the replay
invisible in the outputs.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from driftline.config import PipelineConfig, state_home
from driftline.heap import settle_heap
from driftline.logs import get_logger

log = get_logger("runner")


def resolve_state_paths(cfg: PipelineConfig, state_dir: str | Path | None) -> PipelineConfig:
    """Anchor relative state file paths (the model call ledger) in ``state_dir``,
    else in :func:`state_home`; absolute paths are kept."""
    ledger = Path(cfg.models.ledger.path)
    if ledger.is_absolute():
        return cfg
    base = Path(state_dir).resolve() if state_dir is not None else state_home()
    new_ledger = cfg.models.ledger.model_copy(update={"path": str(base / ledger.name)})
    return cfg.model_copy(update={"models": cfg.models.model_copy(update={"ledger": new_ledger})})


def ensure_recovery_dir(path: str | Path, partitions: int = 1) -> Path:
    """Create and initialise the recovery folder on first use (idempotent)."""
    p = Path(path)
    if not p.exists() or not any(p.glob("part-*.sqlite3")):
        p.mkdir(parents=True, exist_ok=True)
        init_db_dir(p, partitions)
    return p


def run_flow(flow: Dataflow, *, recovery_dir: str | Path | None = None, epoch_interval: float = 10.0, workers: int = 1) -> float:
    """Run ``flow`` to completion (a drained source) or forever; returns seconds taken."""
    recovery = RecoveryConfig(ensure_recovery_dir(recovery_dir)) if recovery_dir else None
    log.info("flow starting", extra={"fields": {"flow": flow.flow_id, "recovery": bool(recovery), "epoch_interval_s": epoch_interval}})
    settle_heap()  # after the flow and its stages are built: see driftline/heap.py
    start = time.monotonic()
    cli_main(flow, workers_per_process=workers, epoch_interval=timedelta(seconds=epoch_interval), recovery_config=recovery)
    took = time.monotonic() - start
    log.info("flow finished", extra={"fields": {"flow": flow.flow_id, "seconds": round(took, 3)}})
    return took
