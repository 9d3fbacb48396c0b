"""`driftline kafka start|stop|status` drives one real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

PORT = int(os.environ.get("DRIFTLINE_TEST_BROKER_CLI_PORT", "19292"))


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRIFTLINE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "driftline.cli", "kafka", *args, "--port", str(PORT)], capture_output=True, text=True, env=env, timeout=180)


def _broker_pids(home: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"kafka.Kafka {home}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_start_twice_leaves_one_broker_and_stop_leaves_none(tmp_path: Path) -> None:
    first = _cli("start", home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "started" in first.stdout
    try:
        second = _cli("start", home=tmp_path)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert len(_broker_pids(tmp_path)) == 1
        status = _cli("status", home=tmp_path)
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        stop = _cli("stop", home=tmp_path)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert _broker_pids(tmp_path) == []
    after = _cli("status", home=tmp_path)
    assert after.returncode == 3 and "stopped" in after.stdout
    assert _cli("stop", home=tmp_path).stdout.strip() == "kafka was not running"


def test_start_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path)}
        res = subprocess.run([sys.executable, "-m", "driftline.cli", "kafka", "start", "--port", str(port)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1
    assert "already in use" in res.stderr
