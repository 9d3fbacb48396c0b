"""Run a flow with Bytewax: cluster shape, recovery folder, epoch interval, logging.

Bytewax snapshots every stateful step and the Kafka offsets at the end of each epoch
into the recovery folder; after a crash, ``driftline run`` with the same folder resumes
from the last snapshot and replays the input since then.  The sinks make the replay
invisible in the outputs.

Scaling uses Bytewax's own cluster (Timely dataflow over TCP): ``workers_per_process``
threads in each of the processes listed by ``addresses``, this one being
``process_id`` (:class:`Cluster`, options and environment variables named as
``python -m bytewax.run`` names them).  :func:`supervise` starts several local
processes on loopback addresses (``driftline run --processes P``).

The recovery folder holds a fixed number of partitions (``part-<i>.sqlite3``), created
on first use with ``recovery.partitions`` of them: Bytewax hashes every snapshot key to
a partition and lets one worker that can reach the partition write it, so any number
of workers, processes and hosts can resume from the same partitions (docs/running.md,
*Scaling*).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from driftline.config import PipelineConfig, state_home
from driftline.heap import TRIM_INTERVAL_S, release_heap, settle_heap, start_heap_trimmer
from driftline.logs import get_logger
from driftline.operators import spread
from driftline.threads import ENV_POLARS_THREADS, polars_threads

log = get_logger("runner")

#: Environment variables of ``python -m bytewax.run`` that describe the cluster.
ENV_WORKERS, ENV_PROCESS_ID, ENV_ADDRESSES = "BYTEWAX_WORKERS_PER_PROCESS", "BYTEWAX_PROCESS_ID", "BYTEWAX_ADDRESSES"
ENV_POD_NAME, ENV_STATEFULSET_NAME, ENV_HOSTFILE = "BYTEWAX_POD_NAME", "BYTEWAX_STATEFULSET_NAME", "BYTEWAX_HOSTFILE_PATH"


class ClusterError(ValueError):
    """The cluster options contradict each other (the message says which and what to do)."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in a Bytewax cluster.

    >>> c = Cluster.resolve(workers_per_process=2, env={"BYTEWAX_POD_NAME": "driftline-enrich-1",
    ...     "BYTEWAX_STATEFULSET_NAME": "driftline-enrich", "BYTEWAX_ADDRESSES": "a:2101;b:2101"})
    >>> c.process_id, c.addresses, c.workers, c.first_worker
    (1, ('a:2101', 'b:2101'), 4, 2)
    >>> Cluster.resolve().workers
    1
    """

    workers_per_process: int = 1
    process_id: int = 0
    addresses: tuple[str, ...] = field(default_factory=tuple)

    @property
    def processes(self) -> int:
        return len(self.addresses) or 1

    @property
    def workers(self) -> int:
        """Workers in the whole cluster."""
        return self.workers_per_process * self.processes

    @property
    def first_worker(self) -> int:
        """Index of this process's first worker (Bytewax numbers workers process by process)."""
        return self.process_id * self.workers_per_process

    @classmethod
    def resolve(
        cls,
        *,
        workers_per_process: int | str | None = None,
        process_id: int | str | None = None,
        addresses: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Cluster:
        """The cluster from explicit options, else Bytewax's environment variables, as
        ``python -m bytewax.run`` reads them: ``BYTEWAX_WORKERS_PER_PROCESS``,
        ``BYTEWAX_PROCESS_ID`` (or the ordinal of ``BYTEWAX_POD_NAME`` in
        ``BYTEWAX_STATEFULSET_NAME``), ``BYTEWAX_ADDRESSES`` (``;``-separated, or one per
        line in the file ``BYTEWAX_HOSTFILE_PATH``)."""
        env = os.environ if env is None else env
        wpp = _int("--workers-per-process", workers_per_process if workers_per_process is not None else env.get(ENV_WORKERS, 1))
        if wpp < 1:
            raise ClusterError(f"--workers-per-process must be at least 1, got {wpp}")
        pid_raw = process_id if process_id is not None else env.get(ENV_PROCESS_ID)
        if pid_raw is None and ENV_POD_NAME in env and ENV_STATEFULSET_NAME in env:
            pod, sts = env[ENV_POD_NAME], env[ENV_STATEFULSET_NAME]
            if not pod.startswith(f"{sts}-"):
                raise ClusterError(f"${ENV_POD_NAME}={pod!r} is not a pod of the StatefulSet ${ENV_STATEFULSET_NAME}={sts!r} (expected {sts}-<ordinal>)")
            pid_raw = pod[len(sts) + 1 :]
        pid = None if pid_raw is None else _int("--process-id", pid_raw)
        addr_raw: str | Sequence[str] | None = addresses if addresses is not None else env.get(ENV_ADDRESSES)
        if addr_raw is None and pid is not None and ENV_HOSTFILE in env:
            with open(env[ENV_HOSTFILE], encoding="utf-8") as hostfile:
                addr_raw = [line.strip() for line in hostfile if line.strip()]
        addrs = tuple(a.strip() for a in (addr_raw.split(";") if isinstance(addr_raw, str) else addr_raw or ()) if a.strip())
        if pid is not None and not addrs:
            raise ClusterError(f"--process-id {pid} needs the addresses of all processes (--addresses 'host:port;host:port', ${ENV_ADDRESSES} or ${ENV_HOSTFILE})")
        if len(addrs) > 1 and pid is None:
            raise ClusterError(f"--addresses lists {len(addrs)} processes: give this one's --process-id (0 to {len(addrs) - 1})")
        pid = pid or 0
        if addrs and not 0 <= pid < len(addrs):
            raise ClusterError(f"--process-id {pid} is not among the {len(addrs)} addresses (ids 0 to {len(addrs) - 1})")
        if len(set(addrs)) != len(addrs):
            raise ClusterError(f"--addresses lists an address twice: {';'.join(addrs)}")
        return cls(workers_per_process=wpp, process_id=pid, addresses=addrs)


def _int(option: str, value: int | str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ClusterError(f"{option} must be an integer, got {value!r}") from None


def resolve_state_paths(cfg: PipelineConfig, state_dir: str | Path | None) -> PipelineConfig:
    """Anchor relative state file paths (the model call ledger) in ``state_dir``,
    else in :func:`state_home`; absolute paths are kept."""
    ledger = Path(cfg.models.ledger.path)
    if ledger.is_absolute():
        return cfg
    base = Path(state_dir).resolve() if state_dir is not None else state_home()
    new_ledger = cfg.models.ledger.model_copy(update={"path": str(base / ledger.name)})
    return cfg.model_copy(update={"models": cfg.models.model_copy(update={"ledger": new_ledger})})


# -- recovery folder -------------------------------------------------------------------


def recovery_partitions(path: str | Path) -> dict[int, int]:
    """``{partition index: partition count}`` of the Bytewax partitions in a folder."""
    found: dict[int, int] = {}
    for f in sorted(Path(path).glob("part-*.sqlite3")):
        with contextlib.closing(sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=10)) as con:
            for index, count in con.execute("SELECT part_index, part_count FROM parts"):
                found[int(index)] = int(count)
    return found


def ensure_recovery_dir(path: str | Path, partitions: int = 1, *, create: bool = True) -> Path:
    """The recovery folder, initialised with ``partitions`` partitions on first use.

    Only one process creates partitions (``create``: process 0, or the supervisor of
    local processes), and it publishes them whole (made aside, then renamed in), so a
    process listing the folder at the same moment never sees a half-made one.  A folder
    that already holds partitions keeps its count, which cannot change (a differing
    ``partitions`` is logged); partitions of different counts in one folder are refused.
    """
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    found = recovery_partitions(p)
    if not found and create:
        with tempfile.TemporaryDirectory(dir=p, prefix=".init-") as tmp:
            init_db_dir(Path(tmp), partitions)
            for f in sorted(Path(tmp).iterdir()):
                os.rename(f, p / f.name)
        log.info("recovery folder created", extra={"fields": {"path": str(p), "partitions": partitions}})
        return p
    counts = set(found.values())
    if len(counts) > 1:
        raise ClusterError(f"recovery folder {p} mixes partitions of different counts {sorted(counts)}: it holds files of two different recovery stores")
    if counts and counts != {partitions}:
        log.warning(
            "recovery folder keeps its partition count",
            extra={"fields": {"path": str(p), "partitions": counts.pop(), "configured": partitions, "hint": "the count is fixed when the folder is created"}},
        )
    return p


def resume_epoch(path: str | Path) -> int | None:
    """The epoch Bytewax resumes the recovery folder from (``None``: nothing to resume),
    computed as Bytewax computes it: the last execution's slowest worker's frontier
    (the frontier of a worker that recorded none is the execution's own resume epoch).
    Every partition of the store must be in the folder."""
    exs: list[tuple[int, int, int]] = []
    fronts: list[tuple[int, int, int]] = []
    for f in sorted(Path(path).glob("part-*.sqlite3")):
        with contextlib.closing(sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=30)) as con:
            exs += con.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
            fronts += con.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
    if not exs:
        return None
    ex, workers, start = max(exs)
    frontier = dict.fromkeys(range(workers), start)
    for num, worker, front in fronts:
        if num == ex and worker in frontier:
            frontier[worker] = max(frontier[worker], front)
    return min(frontier.values())


def purge_uncommitted_snapshots(path: str | Path) -> int:
    """Delete the snapshots of epochs the store has not committed; returns how many.

    A killed execution leaves the snapshots of the epochs it finished but did not commit
    (it died before every worker recorded its frontier).  The next execution resumes from
    the last committed epoch and rewrites the snapshots of the keys it touches, but
    Bytewax keeps each key's snapshot of the newest epoch below the resume epoch, so a
    key the next executions do not touch in that epoch keeps the killed execution's state:
    a partition's window clock ahead of its Kafka offsets, say, which counted replayed
    events late and twice (the monitor flow's SIGKILL test, once its partitions took turns
    to poll).  Bytewax never reads a snapshot at or after the resume epoch before an
    execution rewrites it, so deleting them before the run loses nothing.  Done by process
    0 before it joins the cluster (no worker runs until every process has joined), and
    only when the folder holds every partition of the store; otherwise the resume epoch
    cannot be known here and nothing is deleted (logged).
    """
    p = Path(path)
    found = recovery_partitions(p)
    if not found:
        return 0
    count = next(iter(found.values()))
    if set(found) != set(range(count)):
        log.warning("recovery folder holds only some partitions: snapshots of uncommitted epochs are not purged", extra={"fields": {"path": str(p), "partitions": count, "present": len(found)}})
        return 0
    epoch = resume_epoch(p)
    if epoch is None:
        return 0
    purged = 0
    for f in sorted(p.glob("part-*.sqlite3")):
        with contextlib.closing(sqlite3.connect(f, timeout=30)) as con, con:
            purged += con.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)).rowcount
    if purged:
        log.info("snapshots of uncommitted epochs purged", extra={"fields": {"path": str(p), "resume_epoch": epoch, "snapshots": purged}})
    return purged


def run_flow(
    flow: Dataflow,
    *,
    recovery_dir: str | Path | None = None,
    epoch_interval: float = 10.0,
    workers: int = 1,
    cluster: Cluster | None = None,
    partitions: int = 1,
    heap_trim_interval: float = TRIM_INTERVAL_S,
) -> float:
    """Run ``flow`` to completion (a drained source) or forever; returns seconds taken.

    ``cluster`` places this process in a Bytewax cluster (default: ``workers`` threads in
    this process alone); ``partitions`` is the partition count of a recovery folder
    created now (``recovery.partitions``); ``heap_trim_interval``: seconds between two
    trims of the C heap (0: none; see driftline/heap.py).
    """
    cluster = cluster or Cluster(workers_per_process=workers)
    recovery = None
    if recovery_dir:
        recovery = RecoveryConfig(ensure_recovery_dir(recovery_dir, partitions, create=cluster.process_id == 0))
        if cluster.process_id == 0:
            purge_uncommitted_snapshots(recovery_dir)
    fields = {"flow": flow.flow_id, "recovery": bool(recovery), "epoch_interval_s": epoch_interval, "process_id": cluster.process_id, "processes": cluster.processes, "workers": cluster.workers, "polars_threads": pl.thread_pool_size()}
    log.info("flow starting", extra={"fields": fields})
    spread.WORKERS = cluster.workers  # how finely the input batches are cut (operators/spread.py)
    thresholds = settle_heap()  # after the flow and its stages are built: see driftline/heap.py
    trimmer = start_heap_trimmer(heap_trim_interval)
    start = time.monotonic()
    try:
        cli_main(
            flow,
            workers_per_process=cluster.workers_per_process,
            process_id=cluster.process_id if cluster.addresses else None,
            addresses=list(cluster.addresses) or None,
            epoch_interval=timedelta(seconds=epoch_interval),
            recovery_config=recovery,
        )
        took = time.monotonic() - start
    finally:
        release_heap(thresholds)
    log.info("flow finished", extra={"fields": {"flow": flow.flow_id, "process_id": cluster.process_id, "seconds": round(took, 3), "heap_trims": trimmer.trims, "heap_trim_seconds": round(trimmer.seconds, 3)}})
    return took


# -- local processes -------------------------------------------------------------------

#: Set in the processes :func:`supervise` starts (no progress bar; metrics port + process id).
ENV_SUPERVISED = "DRIFTLINE_SUPERVISED"
#: driftline.metrics' step timers file; each supervised process writes ``<file>.<process id>``.
ENV_STEP_TIMERS = "DRIFTLINE_STEP_TIMERS"
def loopback_addresses(n: int) -> list[str]:
    """``n`` free TCP ports on 127.0.0.1 as Bytewax addresses (held open together while
    choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def supervise(
    argv: Sequence[str],
    processes: int,
    *,
    env: Mapping[str, str] | None = None,
    grace_seconds: float = 10.0,
    command: Sequence[str] = (sys.executable, "-m", "driftline"),
) -> int:
    """Run ``driftline <argv>`` (``command`` + ``argv``) as ``processes`` processes of
    one Bytewax cluster on loopback addresses; returns the cluster's exit status.

    Each process gets ``BYTEWAX_PROCESS_ID`` and ``BYTEWAX_ADDRESSES``, and its share of
    the cores for Polars (``POLARS_MAX_THREADS``, :func:`polars_threads`) unless the
    environment sets it.  The first
    process to fail stops the others (SIGTERM, then SIGKILL after ``grace_seconds``)
    and its status is returned; SIGTERM and SIGINT received here are passed to every
    process; the processes die with the supervisor (Linux parent-death signal).
    """
    addresses = ";".join(loopback_addresses(processes))
    base = dict(os.environ if env is None else env)
    children: list[subprocess.Popen[bytes]] = []
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for c in children:
            if c.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(processes):
            child_env = {**base, ENV_PROCESS_ID: str(i), ENV_ADDRESSES: addresses, ENV_SUPERVISED: "1"}
            child_env.pop(ENV_POD_NAME, None)
            child_env.setdefault(ENV_POLARS_THREADS, str(polars_threads(processes)))
            if child_env.get(ENV_STEP_TIMERS):  # one timers file per process
                child_env[ENV_STEP_TIMERS] = f"{child_env[ENV_STEP_TIMERS]}.{i}"
            children.append(subprocess.Popen([*command, *argv], env=child_env, preexec_fn=_die_with_parent))  # noqa: S603
        log.info("processes started", extra={"fields": {"processes": processes, "pids": [c.pid for c in children], "addresses": addresses}})
        status = _wait_all(children, grace_seconds, received)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
        for s, h in previous.items():
            signal.signal(s, h)
    return status


def _wait_all(children: list[subprocess.Popen[bytes]], grace_seconds: float, received: list[int]) -> int:
    """Wait for every child; the first failure (or a forwarded signal) stops the others."""
    first_failure: int | None = None
    deadline: float | None = None
    while True:
        running = [c for c in children if c.poll() is None]
        for c in children:
            if c.returncode not in (None, 0) and first_failure is None:
                first_failure = c.returncode
                log.error("process failed; stopping the others", extra={"fields": {"process_id": children.index(c), "status": c.returncode}})
                for other in running:
                    with contextlib.suppress(ProcessLookupError):
                        other.terminate()
        if (first_failure is not None or received) and deadline is None:
            deadline = time.monotonic() + grace_seconds
        if not running:
            break
        if deadline is not None and time.monotonic() > deadline:
            for c in running:
                c.kill()
        time.sleep(0.1)
    if first_failure is not None:
        return first_failure if first_failure > 0 else 128 - first_failure
    return 128 + received[0] if received else 0
