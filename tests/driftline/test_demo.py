"""`driftline demo` end to end, whatever holds the port: a running Kafka broker (a),
a plain TCP listener that is not Kafka (b), nothing (c); plus --keep-broker, reuse of a
running bundled broker, SIGTERM mid-run and a broker address that does not answer.

Every run uses its own $DRIFTLINE_HOME and free ports (never 9092), so the broker
processes it leaves (or not) are counted by their state folder only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftline.broker import free_port_pair, probe_kafka
from driftline.commands.demo import choose_kafka, count_rows
from driftline.config.kafka import KafkaConfig

pytestmark = pytest.mark.kafka

EVENTS = 30


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DRIFTLINE_CONFIG")}
    return {**env, "DRIFTLINE_HOME": str(home), **extra}


def _demo(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "driftline.cli", "demo", "--events", str(EVENTS), "--invalid-rate", "0.3", "--out", str(tmp / "out"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp / "home", **env), timeout=300)


def _kafka_cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli", "kafka", *args], capture_output=True, text=True, env=_env(tmp / "home"), timeout=120)


def _broker_pids(home: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"kafka.Kafka {home.resolve()}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _no_broker_left(home: Path) -> bool:
    deadline = time.monotonic() + 10  # a SIGTERMed JVM may take a moment to go
    while _broker_pids(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _broker_pids(home) == []


def _single_run(tmp: Path) -> Path:
    (run,) = (tmp / "out").iterdir()
    return run


def _assert_datasets_complete(run: Path) -> None:
    """Every produced event is either enriched or rejected, in committed files."""
    root = run / "datasets"
    enriched, _ = count_rows(root, "enriched")
    rejected, _ = count_rows(root, "rejected")
    assert enriched > 0 and rejected > 0
    assert enriched + rejected == EVENTS


def _assert_text_summary(stdout: str) -> None:
    assert f"driftline demo: {EVENTS} events" in stdout
    assert "enriched" in stdout and "rejected" in stdout
    assert stdout.rstrip().splitlines()[-1].strip().endswith("# the flow resumes where the demo stopped")


def test_a_uses_the_kafka_broker_already_running_at_the_configured_address(tmp_path: Path, kafka_bootstrap: str) -> None:
    res = _demo(tmp_path, "--json", KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["bootstrap"] == kafka_bootstrap
    assert summary["broker"] == {"origin": "existing", "note": f"using the Kafka broker already running at {kafka_bootstrap}", "left_running": True, "start_command": None}
    assert summary["events_produced"] == EVENTS and summary["rows_written"]["enriched"] > 0
    assert summary["topics"]["input"].startswith(f"driftline-demo-{summary['run_id']}")
    _assert_datasets_complete(_single_run(tmp_path))
    assert probe_kafka(kafka_bootstrap).kind == "kafka"  # the demo did not stop a broker it did not start
    assert not (tmp_path / "home").exists() or _broker_pids(tmp_path / "home") == []


def test_b_port_held_by_something_else_runs_the_bundled_broker_on_a_free_port(tmp_path: Path, silent_port: int) -> None:
    started = time.monotonic()
    res = _demo(tmp_path, "--port", str(silent_port))
    assert res.returncode == 0, res.stderr
    _assert_text_summary(res.stdout)
    assert f"127.0.0.1:{silent_port} is held by something that is not a usable Kafka broker" in res.stdout
    found = re.search(r"so the demo runs the bundled broker on a free port instead: 127\.0\.0\.1:(\d+) \(stopped at the end\)", res.stdout)
    assert found, res.stdout
    port = int(found.group(1))
    assert port != silent_port and f"kafka start --port {port}    # start the broker again" in res.stdout
    _assert_datasets_complete(_single_run(tmp_path))
    assert _no_broker_left(tmp_path / "home")
    assert time.monotonic() - started < 240
    status = _kafka_cli(tmp_path, "status")
    assert status.returncode == 3
    assert [line.split()[:3] for line in status.stdout.splitlines()[2:]] == [[str(port), "-", "stopped"]]


def test_c_nothing_there_starts_the_bundled_broker_on_that_port_and_stops_it(tmp_path: Path) -> None:
    port = free_port_pair()
    res = _demo(tmp_path, "--port", str(port))
    assert res.returncode == 0, res.stderr
    _assert_text_summary(res.stdout)
    assert f"nothing listens at 127.0.0.1:{port}, so the demo runs the bundled broker there (stopped at the end)" in res.stdout
    assert f"kafka start --port {port}    # start the broker again" in res.stdout
    _assert_datasets_complete(_single_run(tmp_path))
    assert _no_broker_left(tmp_path / "home")
    assert probe_kafka(f"127.0.0.1:{port}").kind == "nothing"


def test_keep_broker_leaves_it_listed_and_the_next_demo_takes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port_pair()
    first = _demo(tmp_path, "--port", str(port), "--keep-broker")
    assert first.returncode == 0, first.stderr
    assert f"kafka stop --port {port}    # stop the broker the demo left running" in first.stdout
    try:
        (pid,) = _broker_pids(tmp_path / "home")
        status = _kafka_cli(tmp_path, "status")
        assert status.returncode == 0
        assert [line.split()[:3] for line in status.stdout.splitlines()[2:]] == [[str(port), str(pid), "running"]]
        # the configured address answers nothing: the next demo takes the bundled broker that runs
        monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
        closed = f"127.0.0.1:{free_port_pair()}"
        args = argparse.Namespace(bootstrap=None, port=None, keep_broker=False)
        kafka = choose_kafka(args, KafkaConfig(bootstrap_servers=closed))
        assert (kafka.bootstrap, kafka.origin, kafka.bundled) == (f"127.0.0.1:{port}", "existing", None)
        assert kafka.note == f"nothing listens at {closed}, so the demo uses the bundled broker already running at 127.0.0.1:{port} (pid {pid})"
    finally:
        stop = _kafka_cli(tmp_path, "stop", "--all")
    assert stop.returncode == 0 and f"kafka stopped on port(s) {port}" in stop.stdout
    assert _no_broker_left(tmp_path / "home")


def test_sigterm_during_the_run_stops_the_broker_it_started(tmp_path: Path) -> None:
    port = free_port_pair()
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "driftline.cli", "demo", "--events", "200000", "--out", str(tmp_path / "out"), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home))
    try:
        deadline = time.monotonic() + 180
        while probe_kafka(f"127.0.0.1:{port}", timeout=2).kind != "kafka":  # the broker is up: the demo is producing
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "driftline demo: stopped by SIGTERM" in err
    assert _no_broker_left(home)


def test_a_bootstrap_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port_pair()}"
    res = _demo(tmp_path, "--bootstrap", closed)
    assert res.returncode == 1
    assert f"driftline demo: no Kafka broker answers at {closed}: nothing listens there" in res.stderr
    assert not (tmp_path / "home").exists() or _broker_pids(tmp_path / "home") == []
