"""Kafka plumbing shared by the flows: topic creation and the micro-batch source
(the Kafka sinks are in :mod:`driftline.sinks.kafka`).

The source emits one item per poll: a raw micro-batch, a Polars frame of
:data:`~driftline.operators.decode.SOURCE_SCHEMA` (coordinates, key and payload bytes of
each message, built column by column straight from the poll), and an empty frame every
``idle_tick_ms`` while the partitions are idle, so that time-based steps downstream (file
flushes, model batching) keep moving.

The partitions of one worker take turns (:class:`PollTurns`): Bytewax asks every
partition for a batch each time it runs the source, and the stages then hold all those
polls at once, so with three partitions a backlog put three polls in flight.  One poll per
turn holds the memory a micro-batch needs to one poll, whatever the partition count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.config.kafka import KafkaConfig
from driftline.metrics import CONSUMER_LAG, HEALTH, timed
from driftline.operators.decode import TRACEPARENT, header_value, raw_frame
from driftline.operators.placement import source_part, source_part_coordinates


def produce_with_backpressure(producer: Producer, topic: str, *, value: bytes | None, key: bytes | None = None, headers: Any = None, on_delivery: Any = None) -> None:
    """Produce one message; while librdkafka's local queue is full, serve delivery
    callbacks and try again instead of failing."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def ensure_topics(
    bootstrap_servers: str, topics: Iterable[str], *, partitions: int = 3, extra: dict[str, str] | None = None, timeout: float = 30.0, config: dict[str, str] | None = None
) -> None:
    """Create the topics that do not exist yet (idempotent), with the topic ``config`` given."""
    conf = {"bootstrap.servers": bootstrap_servers, **(extra or {})}
    admin = AdminClient(conf)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1, config=dict(config or {})) for t in missing], operation_timeout=timeout)
    for topic, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise RuntimeError(f"cannot create topic {topic!r}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # wait until metadata shows every partition
        md = admin.list_topics(timeout=timeout).topics
        if all(t in md and len(md[t].partitions) > 0 and md[t].error is None for t in missing):
            return
        time.sleep(0.1)


class PollTurns:
    """The partitions of one worker take turns to poll while they have a backlog.

    Bytewax's source operator asks each of its partitions for a batch every time it runs,
    and the steps downstream then work on every batch it got before the source runs
    again.  With one poll per turn the rows in flight are one poll, not one per partition.
    A turn goes to the partition that polled least recently among those still to be
    asked in this round (a round ends when a partition is asked again); a partition that
    finds nothing still took its turn, and leaves the round open to the next one, so idle
    partitions are polled as often as before.

    >>> t = PollTurns()
    >>> [p for _ in range(3) for p in "abc" if t.ask(p) and t.took(p, emitted=True) is None]
    ['a', 'b', 'c']
    >>> t.done("b"); [p for _ in range(2) for p in "ac" if t.ask(p) and t.took(p, emitted=True) is None]
    ['a', 'c']
    >>> t.ask("a"), t.took("a", emitted=False), t.ask("c")  # "a" found nothing: "c" may poll in the same round
    (True, None, True)
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}  # the round in which each live partition last polled
        self._seen: dict[str, int] = {}  # the round in which each partition was last asked
        self._round = 0
        self._asked: set[str] = set()
        self._taken = False  # a poll of this round returned messages

    def ask(self, part: str) -> bool:
        """May ``part`` poll now?  (False: it returns no batch and is asked again next time.)"""
        if part in self._asked:  # asked again: a new round
            self._round += 1
            self._asked.clear()
            self._taken = False
        self._asked.add(part)
        self._seen[part] = self._round
        self._last.setdefault(part, -1)
        if self._taken:
            return False
        # partitions still to be asked this round; one not asked in the last round is gone
        # (closed, or a finished flow's on this thread) and never holds the turn
        waiting = [r for p, r in self._last.items() if p == part or (p not in self._asked and self._seen[p] >= self._round - 1)]
        return self._last[part] <= min(waiting)

    def took(self, part: str, *, emitted: bool) -> None:
        """``part`` polled (``emitted``: and got messages)."""
        self._last[part] = self._round
        self._taken = self._taken or emitted

    def done(self, part: str) -> None:
        """``part`` reached its end: it no longer takes turns."""
        self._last.pop(part, None)
        self._seen.pop(part, None)
        self._asked.discard(part)


_turns = threading.local()  # one PollTurns per Bytewax worker (a thread)


def worker_turns() -> PollTurns:
    """The calling worker thread's :class:`PollTurns`."""
    turns = getattr(_turns, "turns", None)
    if turns is None:
        turns = _turns.turns = PollTurns()
    return turns


class _MicroBatchPartition(StatefulSourcePartition[pl.DataFrame, int]):
    def __init__(
        self,
        conf: dict[str, Any],
        topic: str,
        partition: int,
        offset: int,
        batch_size: int,
        poll_timeout: float,
        idle_tick: float,
        drain: bool,
        stop: int | None = None,
        *,
        commit: bool = False,
    ) -> None:
        self._consumer = Consumer(conf)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._idle_tick = idle_tick
        self._drain = drain
        self._stop = stop  # backfill: end before this offset
        self._eof = False
        self._last_emit = time.monotonic()
        self._commit = commit  # offsets also committed to conf's consumer group (lag tools)
        self._lag = CONSUMER_LAG.labels(topic, str(partition))
        self._key = source_part(topic, partition)
        self._waiting = False  # skipped its turn: ask again at once

    def next_batch(self) -> list[pl.DataFrame]:
        turns = worker_turns()
        if self._eof or (self._stop is not None and self._offset >= self._stop):
            turns.done(self._key)
            raise StopIteration()
        self._waiting = not turns.ask(self._key)
        if self._waiting:
            return []
        msgs = self._consumer.consume(self._batch_size, self._poll_timeout)
        if self._stop is not None:
            kept = [m for m in msgs if m.error() is not None or m.offset() < self._stop]
            self._eof = len(kept) < len(msgs)  # reached the end of the range (offsets may skip)
            msgs = kept
        # Columns straight from the messages (one C-level pass per field); errors are rare.
        errors = [err for err in map(Message.error, msgs) if err is not None]
        if errors:
            for err in errors:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"error consuming {self._topic}[{self._partition}]: {err}")
                if self._drain:
                    self._eof = True
            msgs = [m for m in msgs if m.error() is None]
        values = list(map(Message.value, msgs))
        turns.took(self._key, emitted=bool(values))
        offsets = list(map(Message.offset, msgs))
        headers = list(map(Message.headers, msgs))
        traceparents = [header_value(h, TRACEPARENT) if h else None for h in headers] if any(headers) else None
        now = time.monotonic()
        HEALTH.polled()
        out: list[pl.DataFrame] = []
        if values:
            self._offset = offsets[-1] + 1
            self._last_emit = now
            stamps = [stamp for _, stamp in map(Message.timestamp, msgs)]
            out.append(raw_frame(values, list(map(Message.key, msgs)), self._topic, self._partition, offsets, stamps, traceparents))
        elif now - self._last_emit >= self._idle_tick:
            self._last_emit = now
            out.append(raw_frame([], [], self._topic, self._partition, [], []))
        self._observe_lag()
        return out

    def next_awake(self) -> datetime | None:
        """At once after a skipped turn; otherwise Bytewax's default (at once after a
        batch, after a short cooldown after an empty one)."""
        return datetime.now(timezone.utc) if self._waiting else None

    def _observe_lag(self) -> None:
        """Lag = high watermark (as of the last fetch, no broker round trip) minus the next offset to read."""
        if self._eof:
            self._lag.set(0)
            return
        try:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, self._partition), cached=True)
        except KafkaException:
            return
        if high < 0:
            return  # nothing fetched yet
        end = high if self._stop is None else min(high, self._stop)
        self._lag.set(max(end - (self._offset if self._offset >= 0 else low), 0))  # before the first record: from the log start

    def snapshot(self) -> int:
        # Bytewax's recovery store holds the resume offset; the consumer group gets a copy so
        # that standard lag tools (kafka-consumer-groups, exporters) see the flow's progress.
        if self._commit:
            try:
                self._consumer.commit(offsets=[TopicPartition(self._topic, self._partition, self._offset)], asynchronous=True)
            except KafkaException:
                pass  # informational only: the next snapshot commits again
        return self._offset

    def close(self) -> None:
        worker_turns().done(self._key)
        self._consumer.close()


class MicroBatchKafkaSource(FixedPartitionedSource[pl.DataFrame, int]):
    """Read Kafka topics as raw micro-batches (Polars frames, see the module docstring).

    Each Kafka partition is a Bytewax partition; its resume state is the next offset
    to read, snapshotted with Bytewax's recovery, so after a crash input is replayed
    from the last snapshot (the sinks make the outputs exactly-once).  With
    ``drain=True`` the source ends at the end of each partition (demos, tests,
    backfills); otherwise it tails forever.  ``start_offsets``/``stop_offsets`` (per
    ``(topic, partition)``) bound a backfill to ``[start, stop)``: a partition without a
    resume state starts at its start offset and ends before its stop offset.

    With ``group_id`` the position is also committed to that Kafka consumer group after
    each snapshot, so standard lag tools see the flow (the group's offsets are never read
    back: recovery stays the source of truth).  Each partition exports its lag as
    ``driftline_kafka_consumer_lag_messages`` after every poll.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        *,
        drain: bool = False,
        batch_size: int = 1000,
        poll_timeout_ms: int = 50,
        idle_tick_ms: int = 500,
        extra: dict[str, str] | None = None,
        start_offsets: dict[tuple[str, int], int] | None = None,
        stop_offsets: dict[tuple[str, int], int] | None = None,
        group_id: str | None = None,
    ) -> None:
        if isinstance(topics, str):
            raise TypeError("topics must be a sequence of names, not a string")
        self._servers = bootstrap_servers
        self._topics = list(topics)
        self._drain = drain
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout_ms / 1000
        self._idle_tick = idle_tick_ms / 1000
        self._extra = dict(extra or {})
        self._start = dict(start_offsets or {})  # backfill range per (topic, partition): [start, stop)
        self._stop = dict(stop_offsets or {})
        self._group = group_id

    @classmethod
    def from_config(
        cls,
        kafka: KafkaConfig,
        topics: Sequence[str],
        *,
        drain: bool,
        start_offsets: dict[tuple[str, int], int] | None = None,
        stop_offsets: dict[tuple[str, int], int] | None = None,
        group_id: str | None = None,
    ) -> MicroBatchKafkaSource:
        """The source for ``topics`` with the ``kafka`` section's brokers and poll settings
        (and a backfill's range, or the consumer group offsets are copied to: see the class docstring)."""
        return cls(
            kafka.bootstrap_servers,
            topics,
            drain=drain,
            batch_size=kafka.poll_batch_size,
            poll_timeout_ms=kafka.poll_timeout_ms,
            idle_tick_ms=kafka.idle_tick_ms,
            extra=kafka.client_config(),
            start_offsets=start_offsets,
            stop_offsets=stop_offsets,
            group_id=group_id,
        )

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._servers, **self._extra})
        md = admin.list_topics(timeout=30)
        parts = []
        for topic in self._topics:
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                raise RuntimeError(f"input topic {topic!r} does not exist on {self._servers}")
            parts.extend(source_part(topic, p) for p in sorted(t.partitions))
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _MicroBatchPartition:
        topic, idx = source_part_coordinates(for_part)
        conf = {
            "bootstrap.servers": self._servers,
            # Offsets live in Bytewax's recovery store; with a group id they are also committed
            # to that consumer group after each snapshot (see snapshot()), never read back.
            "group.id": self._group or "driftline-unused",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "fetch.wait.max.ms": "50",
            # Prefetch a poll or two ahead, not librdkafka's default 100,000 messages / 64 MB
            # per partition consumer: with several partitions that was most of the flow's RSS.
            "queued.min.messages": str(max(2 * self._batch_size, 10_000)),
            "queued.max.messages.kbytes": "16384",
            **self._extra,
        }
        offset = self._start.get((topic, idx), OFFSET_BEGINNING) if resume_state is None else resume_state
        part = _MicroBatchPartition(
            conf, topic, idx, offset, self._batch_size, self._poll_timeout, self._idle_tick, self._drain, self._stop.get((topic, idx)), commit=self._group is not None
        )
        part.next_batch = timed(step_id, part.next_batch)  # type: ignore[method-assign]  # a no-op unless step timers are on
        return part
