"""The size of Polars' thread pool in a driftline process, decided before Polars is imported.

Polars makes its pool once, when it is first imported, with ``POLARS_MAX_THREADS``
threads (default: one per core).  So the ``driftline`` executable sets the variable
first thing (:func:`set_polars_threads`, from :func:`driftline.cli.console_main`),
unless the environment sets it already; nothing here imports Polars.

- A process that runs a flow alone gets one thread more than its cores
  (:func:`flow_polars_threads`).  Each worker submits Polars queries from two threads at
  once, the worker thread and its helper thread (:mod:`driftline.operators.ahead`), and
  many of those queries are one long task (a regex or a JSON encoding over a whole
  column): with a pool as large as the cores, the worker thread's short queries wait
  behind the helper's long ones; with one more thread the operating system shares the
  cores among them.  Measured end to end (``bench/bench_e2e.py``'s driftline leg,
  200,000 events on 2 cores, 12 alternating runs on one topic): 3 threads drained faster
  than 2 in 8 of 12 pairs, median +11%, and their rates spread less
  (docs/performance.md, round 13).
- The processes of a cluster on one host (``driftline run --processes P``) share the
  cores: :func:`polars_threads`, set by :func:`driftline.runner.supervise`.

The cores are the ones the process may run on: its CPU affinity, capped by a cgroup v2
CPU quota (a container limited to 2 CPUs on a 64-core node gets 2, not 64).
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

#: Read by Polars when it is imported.
ENV_POLARS_THREADS = "POLARS_MAX_THREADS"
#: cgroup v2's CPU quota of this process's group: "<quota µs> <period µs>" or "max <period>".
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def quota_cpus(cpu_max: str) -> float | None:
    """The CPUs a cgroup v2 ``cpu.max`` line allows (None: no quota, or unreadable).

    >>> quota_cpus("200000 100000"), quota_cpus("150000 100000"), quota_cpus("max 100000"), quota_cpus("")
    (2.0, 1.5, None, None)
    """
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def host_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's quota
    rounded up (a quota of 1.5 CPUs keeps 2 threads busy part of the time).

    >>> 1 <= host_cpus() <= (os.cpu_count() or 1)
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota = quota_cpus(cpu_max.read_text())
    except OSError:
        quota = None
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def polars_threads(processes: int, cpus: int | None = None) -> int:
    """Polars threads for each of ``processes`` processes on one host of ``cpus`` cores.

    Every process has a pool as large as the host by default, so P processes run P times
    as many compute threads as there are cores, and the spinning and switching cost CPU
    that the flow needs (measured with ``bench/bench_e2e.py --processes 2`` on 2 cores:
    the CPU-bound speed-up went from 1.18x to 1.41x on 30,000 events with one thread each).

    >>> polars_threads(2, cpus=2), polars_threads(2, cpus=8), polars_threads(4, cpus=2)
    (1, 4, 1)
    """
    return max(1, (cpus or host_cpus()) // processes)


def flow_polars_threads(cpus: int | None = None) -> int:
    """Polars threads for a process that has the host to itself: one more than its cores
    (see the module docstring).

    >>> flow_polars_threads(cpus=2), flow_polars_threads(cpus=16)
    (3, 17)
    """
    return (cpus or host_cpus()) + 1


def set_polars_threads(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set ``POLARS_MAX_THREADS`` to :func:`flow_polars_threads` unless ``environ`` has it
    (a user's setting, or a process of :func:`driftline.runner.supervise` given its
    share); returns the value in force.  Takes effect only before Polars is imported.

    >>> env = {}
    >>> set_polars_threads(env) == str(flow_polars_threads()), set_polars_threads({"POLARS_MAX_THREADS": "1"})
    (True, '1')
    """
    return environ.setdefault(ENV_POLARS_THREADS, str(flow_polars_threads()))
