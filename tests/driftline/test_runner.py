"""The cluster options, the recovery folder and the local-process supervisor of
``driftline run`` (issue 13), without a broker."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import sqlite3
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from driftline.runner import Cluster, ClusterError, ensure_recovery_dir, recovery_partitions, supervise
from driftline.threads import polars_threads


def test_cluster_from_bytewax_environment(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("a:2101\n\nb:2101\nc:2101\n")
    c = Cluster.resolve(env={"BYTEWAX_PROCESS_ID": "2", "BYTEWAX_HOSTFILE_PATH": str(hostfile), "BYTEWAX_WORKERS_PER_PROCESS": "3"})
    assert (c.process_id, c.addresses, c.workers, c.first_worker) == (2, ("a:2101", "b:2101", "c:2101"), 9, 6)
    # explicit options win over the environment, as in python -m bytewax.run
    c = Cluster.resolve(workers_per_process=1, process_id=0, addresses="x:1;y:1", env={"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "p:1;q:1"})
    assert (c.process_id, c.addresses, c.workers) == (0, ("x:1", "y:1"), 2)


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"process_id": 1}, {}, "needs the addresses"),
        ({"addresses": "a:1;b:1"}, {}, "give this one's --process-id"),
        ({"process_id": 2, "addresses": "a:1;b:1"}, {}, "is not among the 2 addresses"),
        ({"process_id": 0, "addresses": "a:1;a:1"}, {}, "an address twice"),
        ({"workers_per_process": 0}, {}, "at least 1"),
        ({}, {"BYTEWAX_POD_NAME": "other-0", "BYTEWAX_STATEFULSET_NAME": "driftline-enrich", "BYTEWAX_ADDRESSES": "a:1"}, "not a pod of the StatefulSet"),
        ({"process_id": "one", "addresses": "a:1"}, {}, "must be an integer"),
    ],
)
def test_contradictory_cluster_options_fail_with_a_message(kwargs: dict, env: dict, message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        Cluster.resolve(**kwargs, env=env)


def _counting_flow(items: list, out: list) -> Any:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource

    flow = Dataflow("stale")
    counts = op.stateful_map("count", op.key_on("key", op.input("in", flow, TestingSource(items)), lambda x: x), lambda n, _x: ((n or 0) + 1, (n or 0) + 1))
    op.output("out", counts, TestingSink(out))
    return flow


def test_a_killed_executions_snapshots_of_uncommitted_epochs_are_never_resumed(tmp_path: Path) -> None:
    """Bytewax resumes each key from its newest snapshot below the resume epoch; a killed
    execution's snapshot of an epoch it did not commit survives the next execution when
    that one does not touch the key in that epoch, and would be resumed after it."""
    from bytewax.testing import TestingSource

    from driftline.runner import purge_uncommitted_snapshots, resume_epoch, run_flow

    rec = tmp_path / "rec"
    items = ["a", "b", TestingSource.ABORT(), "a", "a", "a", TestingSource.ABORT(), "b"]
    out: list = []
    run_flow(_counting_flow(items, out), recovery_dir=rec, epoch_interval=0, heap_trim_interval=0)
    epoch, step = resume_epoch(rec), "stale.count.stateful_flat_map.stateful.stateful_batch"
    assert out == [("a", 1), ("b", 1)] and epoch is not None
    # what a killed execution that got further leaves: key b's state of the resume epoch,
    # written, never committed (Bytewax's snapshots are pickled states)
    with contextlib.closing(sqlite3.connect(rec / "part-0.sqlite3")) as con, con:
        assert con.execute("SELECT COUNT(*) FROM snaps WHERE step_id = ? AND state_key = 'b'", (step,)).fetchone() == (1,)
        con.execute("INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, 'b', ?, ?)", (step, epoch, pickle.dumps(100)))
    out.clear()
    run_flow(_counting_flow(items, out), recovery_dir=rec, epoch_interval=0, heap_trim_interval=0)  # touches only key a
    assert out == [("a", 2), ("a", 3), ("a", 4)]
    with contextlib.closing(sqlite3.connect(rec / "part-0.sqlite3")) as con:
        assert con.execute("SELECT COUNT(*) FROM snaps WHERE ser_change = ?", (pickle.dumps(100),)).fetchone() == (0,)  # purged before the run
    out.clear()
    run_flow(_counting_flow(items, out), recovery_dir=rec, epoch_interval=0, heap_trim_interval=0)
    assert ("b", 2) in out  # b resumed from its committed state (1), not from the killed execution's (100)
    assert purge_uncommitted_snapshots(rec) == 0  # a finished execution left nothing uncommitted


def test_recovery_folder_is_created_once_and_keeps_its_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = tmp_path / "rec"
    ensure_recovery_dir(rec, 4, create=False)  # a process other than 0 never creates partitions
    assert recovery_partitions(rec) == {}
    ensure_recovery_dir(rec, 4)
    assert recovery_partitions(rec) == {i: 4 for i in range(4)}
    assert not [p for p in rec.iterdir() if p.name.startswith(".")]  # made aside, renamed in
    ensure_recovery_dir(rec, 8)  # the count is fixed: kept, and said so
    assert recovery_partitions(rec) == {i: 4 for i in range(4)}
    assert "keeps its partition count" in caplog.text
    other = tmp_path / "other"
    ensure_recovery_dir(other, 2)
    shutil.copy(other / "part-1.sqlite3", rec / "part-9.sqlite3")
    with pytest.raises(ClusterError, match="mixes partitions of different counts"):
        ensure_recovery_dir(rec, 4)


CHILD = """
import os, sys, time
pid = int(os.environ["BYTEWAX_PROCESS_ID"])
open(os.path.join(sys.argv[1], f"started-{pid}"), "w").write(os.environ["BYTEWAX_ADDRESSES"])
if pid == 1 and sys.argv[2] == "fail":
    time.sleep(0.5)
    sys.exit(3)
time.sleep(120)
"""


def test_a_failing_process_stops_the_others(tmp_path: Path) -> None:
    start = time.monotonic()
    status = supervise([str(tmp_path), "fail"], 3, command=(sys.executable, "-c", CHILD), grace_seconds=5)
    assert status == 3 and time.monotonic() - start < 60
    addresses = {(tmp_path / f"started-{i}").read_text() for i in range(3)}
    assert len(addresses) == 1 and len(addresses.pop().split(";")) == 3  # one cluster, three loopback addresses


def test_sigterm_reaches_every_process(tmp_path: Path) -> None:
    script = f"import sys; from driftline.runner import supervise; sys.exit(supervise([{str(tmp_path)!r}, 'live'], 2, command=(sys.executable, '-c', {CHILD!r})))"
    proc = subprocess.Popen([sys.executable, "-c", script], env={k: v for k, v in os.environ.items() if not k.startswith("BYTEWAX")})
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"started-{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM


POLARS_CHILD = """
import os, sys
open(os.path.join(sys.argv[1], "threads-" + os.environ["BYTEWAX_PROCESS_ID"]), "w").write(os.environ.get("POLARS_MAX_THREADS", "unset"))
"""


@pytest.mark.parametrize("given", [None, "3"])
def test_each_process_gets_its_share_of_the_cores_for_polars(tmp_path: Path, given: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"} | ({"POLARS_MAX_THREADS": given} if given else {})
    assert supervise([str(tmp_path)], 2, env=env, command=(sys.executable, "-c", POLARS_CHILD)) == 0
    expected = given or str(polars_threads(2))
    assert [(tmp_path / f"threads-{i}").read_text() for i in range(2)] == [expected, expected]


class _Cyclic:
    """A sink partition in a reference cycle, like one holding its Kafka client and a bound callback."""

    def __init__(self) -> None:
        self.me = self


def test_a_finished_flow_leaves_nothing_frozen_and_its_cycles_collected() -> None:
    """``run_flow`` freezes the start-up heap (driftline/heap.py) and thaws it when the flow
    ends: a process that runs flow after flow must not keep each one's clients alive."""
    import gc
    import weakref

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource

    from driftline.runner import run_flow

    refs: list[weakref.ref] = []

    class Part(StatelessSinkPartition[int], _Cyclic):
        def __init__(self) -> None:
            _Cyclic.__init__(self)
            refs.append(weakref.ref(self))

        def write_batch(self, items: list[int]) -> None:
            pass

    class Sink(DynamicSink[int]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Part:
            return Part()

    thresholds = gc.get_threshold()
    flow = Dataflow("thaw")
    op.output("out", op.input("in", flow, TestingSource([1, 2, 3])), Sink())
    run_flow(flow, heap_trim_interval=0)
    del flow
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    assert refs and all(r() is None for r in refs)
