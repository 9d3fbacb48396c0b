"""Test helpers so every flow runs without Kafka: an in-memory micro-batch source,
an in-memory sink, and a fake clock.

>>> from driftline.testing import InMemorySink, raw_batches
>>> batches = raw_batches([b'{"a": 1}', b'{"a": 2}'], batch_size=1)
>>> [len(b) for b in batches]
[1, 1]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource

from driftline.clock import FakeClock
from driftline.operators.decode import RawRecord

X = TypeVar("X")

__all__ = ["FakeClock", "InMemorySink", "raw_batches", "micro_batch_source"]


def raw_batches(
    payloads: Sequence[bytes | None], *, topic: str = "events", partition: int = 0, batch_size: int = 1000, start_offset: int = 0, timestamp_ms: int = 0
) -> list[list[RawRecord]]:
    """Cut payloads into poll-sized lists of :class:`RawRecord` with consecutive offsets."""
    records = [RawRecord(p, topic, partition, start_offset + i, timestamp_ms) for i, p in enumerate(payloads)]
    return [records[i : i + batch_size] for i in range(0, len(records), batch_size)]


def micro_batch_source(batches: Iterable[list[RawRecord]]) -> TestingSource:
    """A Bytewax source emitting each list of raw records as one item, like the Kafka source."""
    return TestingSource(list(batches))


class _ListPartition(StatelessSinkPartition[Any], Generic[X]):
    def __init__(self, items: list[X]) -> None:
        self._items = items

    def write_batch(self, items: list[X]) -> None:
        self._items.extend(items)


class InMemorySink(DynamicSink[X]):
    """Collects every item written into ``self.items`` (in-process, at-least-once)."""

    def __init__(self) -> None:
        self.items: list[X] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ListPartition[X]:
        return _ListPartition(self.items)
