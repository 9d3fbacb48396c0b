"""`driftline kafka start|stop|status` drives real brokers; the probe that tells Kafka
from other listeners; free ports; the broker dies with the process that started it
for one run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from driftline.broker import LocalKafka, bundled_brokers, free_port_pair, probe_kafka

def _cli(*args: str, home: Path, port: int | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRIFTLINE_HOME": str(home)}
    port_args = ["--port", str(port)] if port is not None else []
    return subprocess.run([sys.executable, "-m", "driftline.cli", "kafka", *args, *port_args], capture_output=True, text=True, env=env, timeout=180)


def _broker_pids(home: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"kafka.Kafka {home}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.kafka
def test_start_twice_leaves_one_broker_and_stop_leaves_none(tmp_path: Path) -> None:
    # chosen now, not when the module is collected: minutes later another process of the
    # suite may hold one of the pair (a fresh-clone CI run's broker exited during start-up,
    # its log saying the controller port, port + 1, was already in use)
    port = int(os.environ.get("DRIFTLINE_TEST_BROKER_CLI_PORT") or free_port_pair())
    first = _cli("start", home=tmp_path, port=port)
    assert first.returncode == 0, first.stderr
    assert "started" in first.stdout
    try:
        second = _cli("start", home=tmp_path, port=port)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert len(_broker_pids(tmp_path)) == 1
        status = _cli("status", home=tmp_path, port=port)
        assert status.returncode == 0 and "running" in status.stdout
        listing = _cli("status", home=tmp_path, port=None)
        (pid,) = _broker_pids(tmp_path)
        assert listing.returncode == 0
        assert [line.split()[:3] for line in listing.stdout.splitlines()[2:]] == [[str(port), str(pid), "running"]]
    finally:
        stop = _cli("stop", home=tmp_path, port=port)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert _broker_pids(tmp_path) == []
    after = _cli("status", home=tmp_path, port=port)
    assert after.returncode == 3 and "stopped" in after.stdout
    assert _cli("stop", home=tmp_path, port=port).stdout.strip() == "kafka was not running"


def test_start_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path)}
        res = subprocess.run([sys.executable, "-m", "driftline.cli", "kafka", "start", "--port", str(port)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1
    assert "already in use" in res.stderr


def test_probe_tells_a_closed_port_from_a_silent_listener_quickly(silent_port: int) -> None:
    closed = free_port_pair()
    t0 = time.monotonic()
    nothing = probe_kafka(f"127.0.0.1:{closed}", timeout=1.0)
    assert (nothing.kind, nothing.detail) == ("nothing", "nothing listens there")
    t1 = time.monotonic()
    other = probe_kafka(f"127.0.0.1:{silent_port}", timeout=1.0)
    t2 = time.monotonic()
    assert other.kind == "other" and other.detail.startswith("no answer to a Kafka metadata request within 1 s")
    assert t1 - t0 < 5 and t2 - t1 < 10  # bounded by the timeout, not by librdkafka's 60 s default


def test_probe_refuses_a_listener_that_speaks_another_protocol() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_http() -> None:
        with server:
            while True:
                try:
                    conn = server.accept()[0]
                except OSError:
                    return
                with conn:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_http, daemon=True).start()
    try:
        assert probe_kafka(f"127.0.0.1:{server.getsockname()[1]}", timeout=1.0).kind == "other"
    finally:
        server.close()


@pytest.mark.kafka
def test_probe_recognises_a_real_broker(kafka_bootstrap: str) -> None:
    probe = probe_kafka(kafka_bootstrap)
    assert probe.kind == "kafka", probe.detail


def test_free_port_pair_skips_preferred_ports_that_are_held(silent_port: int) -> None:
    free = free_port_pair()
    assert free_port_pair(prefer=[silent_port, free]) == free
    assert free_port_pair(prefer=[silent_port - 1]) not in (silent_port - 1, silent_port)  # its controller port is held


def test_status_lists_every_state_folder_and_spots_dead_pids(tmp_path: Path) -> None:
    assert _cli("status", home=tmp_path, port=None).returncode == 3
    dead = subprocess.Popen(["true"])
    dead.wait()
    for port in (19001, 9092):
        (tmp_path / f"kafka-{port}").mkdir()
    (tmp_path / "kafka-19001" / "broker.pid").write_text(f"{dead.pid}\n")
    (tmp_path / "kafka-notes").mkdir()  # not a broker folder
    assert [b.port for b in bundled_brokers(tmp_path)] == [9092, 19001]
    listing = _cli("status", home=tmp_path, port=None)
    assert listing.returncode == 3
    assert [line.split()[:3] for line in listing.stdout.splitlines()[2:]] == [["9092", "-", "stopped"], ["19001", "-", "stopped"]]


@pytest.mark.kafka
def test_a_broker_started_to_die_with_its_parent_goes_when_the_parent_is_killed(tmp_path: Path) -> None:
    port = free_port_pair()
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import time; from driftline.broker import LocalKafka; LocalKafka(port={port}).start(die_with_parent=True); print('up', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DRIFTLINE_HOME": str(tmp_path)},
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "up"
        assert len(_broker_pids(tmp_path)) == 1
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 60
        while _broker_pids(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _broker_pids(tmp_path) == []
        assert not LocalKafka(port=port, state_dir=tmp_path / f"kafka-{port}").status().running
    finally:
        parent.kill()
        LocalKafka(port=port, state_dir=tmp_path / f"kafka-{port}").stop()
