"""driftline/threads.py: the cores a process may use (affinity and cgroup quota), and each
cluster process's share of them for Polars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from driftline.threads import host_cpus, polars_threads, quota_cpus


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


def test_cluster_processes_share_the_cores() -> None:
    assert [polars_threads(p, cpus=4) for p in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    assert polars_threads(1) == host_cpus()
