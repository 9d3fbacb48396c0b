"""Backfill ranges and drain progress for ``driftline run``.

:func:`resolve_range` turns ``--from-time/--to-time`` (Kafka timestamps, through
``offsets_for_times``) or ``--from-offset/--to-offset`` into a start and a stop offset
(exclusive) per partition of the input topic, clamped to what the partition holds when
the backfill starts, so a backfill always ends.  :func:`offset_gaps` finds partitions
where a backfill would leave never-committed offsets below its start (see
docs/running.md).  :class:`DrainProgress` draws a progress bar with an ETA from the
flow's input counter while a drained run or a backfill runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.progress import bar


@dataclass(frozen=True)
class OffsetRange:
    """Per-partition ``[start, stop)`` offsets of one topic."""

    topic: str
    start: dict[int, int]
    stop: dict[int, int]
    low: dict[int, int]  # first offset each partition still holds (older ones are deleted)

    @property
    def total(self) -> int:
        return sum(max(0, self.stop[p] - self.start[p]) for p in self.start)


def resolve_range(
    conf: dict[str, Any],
    topic: str,
    *,
    from_time: datetime | None = None,
    to_time: datetime | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
) -> OffsetRange:
    """The offsets to read in every partition of ``topic`` (see the module docstring)."""
    md = AdminClient(conf).list_topics(timeout=30)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise LookupError(f"input topic {topic!r} does not exist on {conf['bootstrap.servers']}")
    parts = sorted(t.partitions)
    consumer = Consumer({**conf, "group.id": "driftline-backfill-unused", "enable.auto.commit": False})
    try:
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False) for p in parts}

        def at(when: datetime | None, default: dict[int, int]) -> dict[int, int]:
            if when is None:
                return dict(default)
            ms = int(when.timestamp() * 1000)
            found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=30)
            return {tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][1]) for tp in found}

        start = at(from_time, {p: lo for p, (lo, _hi) in marks.items()})
        stop = at(to_time, {p: hi for p, (_lo, hi) in marks.items()})
    finally:
        consumer.close()
    if from_offset is not None:
        start = {p: from_offset for p in parts}
    if to_offset is not None:
        stop = {p: to_offset for p in parts}
    start = {p: min(max(start[p], marks[p][0]), marks[p][1]) for p in parts}
    stop = {p: max(min(stop[p], marks[p][1]), start[p]) for p in parts}
    return OffsetRange(topic, start, stop, {p: lo for p, (lo, _hi) in marks.items()})


def offset_gaps(rng: OffsetRange, watermarks: dict[tuple[str, int], int]) -> list[str]:
    """Partitions whose range starts above the next offset the datasets expect (a gap a
    later run on the same root would treat as committed), as ``topic[p]: a..b`` texts.

    >>> rng = OffsetRange("t", start={0: 10, 1: 3}, stop={0: 20, 1: 9}, low={0: 0, 1: 3})
    >>> offset_gaps(rng, {("t", 0): 4})   # partition 1 starts at its first offset: no gap
    ['t[0]: offsets 5..9']
    """
    out = []
    for p, s in sorted(rng.start.items()):
        if rng.stop[p] <= s:
            continue
        expected = watermarks.get((rng.topic, p), -1) + 1
        floor = max(expected, rng.low.get(p, 0))
        if s > floor:
            out.append(f"{rng.topic}[{p}]: offsets {floor}..{s - 1}")
    return out


class DrainProgress:
    """A progress bar (count, rate, ETA when ``total`` is known) fed by the flow's
    ``driftline_events_in_total`` counter from a background thread."""

    def __init__(self, flow: str, total: int | None, desc: str) -> None:
        self.flow = flow
        self.total = total
        self.desc = desc
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _count(self) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value("driftline_events_in_total", {"flow": self.flow}) or 0.0

    def _run(self) -> None:
        base = self._count()
        with bar(total=self.total, desc=self.desc, unit="event", unit_scale=True) as progress:
            while not self._stop.wait(0.5):
                progress.update(int(self._count() - base) - progress.n)
            progress.update(int(self._count() - base) - progress.n)

    def __enter__(self) -> DrainProgress:
        self._thread = threading.Thread(target=self._run, name="driftline-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
