"""Shared fixtures: a REAL Kafka broker (never a mock) and unique topics.

The broker is ``$KAFKA_BOOTSTRAP_SERVERS`` when set; otherwise the project's local
KRaft broker (``driftline.broker.LocalKafka``) on port ``$DRIFTLINE_TEST_KAFKA_PORT``
(default: two free ports, so parallel sessions never collide), started for the session
and stopped at its end.  Where a Docker
engine is reachable and ``DRIFTLINE_TEST_KAFKA=testcontainers``, testcontainers'
Kafka module is used instead (not on this project's CI machine, which has no Docker).
"""

from __future__ import annotations

import gc
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from driftline.broker import LocalKafka


def _free_ports(n: int) -> tuple[int, ...]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return tuple(s.getsockname()[1] for s in socks)
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    if os.environ.get("DRIFTLINE_TEST_KAFKA") == "testcontainers":  # pragma: no cover - needs Docker
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    port, controller = (int(os.environ["DRIFTLINE_TEST_KAFKA_PORT"]),) * 2 if os.environ.get("DRIFTLINE_TEST_KAFKA_PORT") else _free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller if controller != port else None, state_dir=tmp_path_factory.mktemp("kafka"))
    broker.start(timeout=120)
    try:
        yield broker.bootstrap
    finally:
        gc.collect()  # Kafka clients left in reference cycles by finished tests close while the broker is still up
        broker.stop()


@pytest.fixture
def unique_topic() -> Callable[[str], str]:
    """Make topic names unique per test so tests never see each other's data."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files holding a ``slow`` test run first; then the others, those with the most
    tests first (pytest-xdist's own order for ``--dist loadfile``).  Each file's tests stay
    together and in their order.

    pytest-xdist's order put the minute-long single-test files last, where one of them
    kept a process busy while the others had finished; the Makefile passes
    ``--no-loadscope-reorder`` so that this order is the one used."""
    slow: set[Path] = set()
    count: dict[Path, int] = {}
    for item in items:
        count[item.path] = count.get(item.path, 0) + 1
        if item.get_closest_marker("slow") is not None:
            slow.add(item.path)
    items.sort(key=lambda item: (item.path not in slow, -count[item.path]))
