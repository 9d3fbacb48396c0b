"""The ``driftline`` executable ends with ``os._exit`` after running the atexit handlers
(so native thread pools cannot abort a finished run at interpreter teardown); what the
handlers write and the exit status must survive that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys
from driftline import cli
marker = sys.argv[1]
atexit.register(lambda: open(marker, "w").write("flushed"))
sys.argv = ["driftline", *sys.argv[2:]]
print("before", end="")  # buffered: must still reach the pipe
cli.console_main()
"""


def run(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "marker"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(marker), *argv], capture_output=True, text=True, timeout=120)
    return proc, marker


def test_success_runs_atexit_handlers_and_flushes_output(tmp_path) -> None:
    proc, marker = run(tmp_path, "verify", "--root", str(tmp_path / "none"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("before") and "no datasets under" in proc.stdout
    assert marker.read_text() == "flushed"


def test_usage_error_keeps_exit_status_2(tmp_path) -> None:
    proc, marker = run(tmp_path, "no-such-command")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert marker.read_text() == "flushed"


def test_version_exits_0(tmp_path) -> None:
    proc, _ = run(tmp_path, "--version")
    assert proc.returncode == 0 and "driftline " in proc.stdout
