"""The cores a driftline process may use, and its share of them for Polars' thread pool.

Polars makes its pool once, when it is first imported, with ``POLARS_MAX_THREADS``
threads (default: one per core).  The processes of a cluster on one host
(``driftline run --processes P``) share the cores, so :func:`driftline.runner.supervise`
gives each its share (:func:`polars_threads`) unless the environment sets the variable;
each flow's start log names the pool it got (``polars_threads``).

The cores are the ones the process may run on: its CPU affinity, capped by a cgroup v2
CPU quota (a container limited to 2 CPUs on a 64-core node gets 2, not 64).

A pool of one thread more than the cores for a process running alone (the worker and
its helper thread submit queries at once) was measured and not kept: no difference end to
end (docs/performance.md, round 13).
"""

from __future__ import annotations

import math
import os
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
