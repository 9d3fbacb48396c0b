"""driftline/threads.py: Polars' pool is sized before Polars is imported, from the cores
the process may use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.threads import flow_polars_threads, host_cpus, polars_threads, quota_cpus

# The executable's entry point with main() replaced by one printing the pool Polars made.
POOL_SIZE = """
import sys
from driftline import cli
cli.main = lambda: print(__import__("polars").thread_pool_size()) or 0
cli.console_main()
"""


def _pool_size(env_threads: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"} | ({"POLARS_MAX_THREADS": env_threads} if env_threads else {})
    proc = subprocess.run([sys.executable, "-c", POOL_SIZE], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_the_executable_gives_polars_one_thread_more_than_the_cores_before_importing_it() -> None:
    assert "polars" not in subprocess.run([sys.executable, "-c", "import sys, driftline.cli, driftline.threads; print(sorted(sys.modules))"], capture_output=True, text=True, timeout=60).stdout
    assert _pool_size(None) == flow_polars_threads() == host_cpus() + 1


def test_a_pool_size_set_in_the_environment_wins() -> None:
    assert _pool_size("1") == 1


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("50000 100000", 0.5), ("0 100000", None), ("x y", None), ("", None), ("1 2 3", None)],
)
def test_cgroup_quota_lines(cpu_max: str, expected: float | None) -> None:
    assert quota_cpus(cpu_max) == expected


def test_a_cgroup_quota_caps_the_cores_rounded_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "quota").write_text("50000 100000\n")  # half a CPU: still one thread
    (tmp_path / "none").write_text("max 100000\n")
    (tmp_path / "large").write_text(f"{(affinity + 8) * 100000} 100000\n")  # more than the affinity allows
    assert host_cpus(tmp_path / "quota") == 1
    assert host_cpus(tmp_path / "none") == affinity
    assert host_cpus(tmp_path / "large") == affinity
    assert host_cpus(tmp_path / "missing") == affinity
    if affinity >= 2:
        (tmp_path / "one-and-a-half").write_text("150000 100000\n")
        assert host_cpus(tmp_path / "one-and-a-half") == 2


def test_cluster_processes_share_the_cores_and_a_lone_process_gets_one_more() -> None:
    assert [polars_threads(p, cpus=4) for p in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    assert flow_polars_threads(cpus=1) == 2
