"""The Kafka source's turns: one poll in flight per worker, every message read once."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer

from driftline.kafka_io import MicroBatchKafkaSource, PollTurns, ensure_topics, worker_turns


def test_partitions_with_a_backlog_poll_in_turn_and_equally_often() -> None:
    turns = PollTurns()
    polled: list[list[str]] = []
    for _ in range(30):  # Bytewax asks every partition, in a fixed order, each time the source runs
        polled.append([p for p in ("t+0", "t+1", "t+2") if turns.ask(p) and turns.took(p, emitted=True) is None])
    assert all(len(r) == 1 for r in polled)
    assert Counter(r[0] for r in polled) == {"t+0": 10, "t+1": 10, "t+2": 10}


def test_an_idle_partition_leaves_its_turn_to_the_next() -> None:
    turns = PollTurns()
    assert turns.ask("a") and turns.took("a", emitted=False) is None
    assert turns.ask("b")  # "a" found nothing: "b" may poll in the same round
    turns.took("b", emitted=True)
    assert not turns.ask("c")  # one poll with messages per round
    turns.done("a")
    assert turns.ask("c")  # next round: "c" has waited longest


def test_a_partition_that_is_no_longer_asked_never_holds_the_turn() -> None:
    """A finished flow's partition (closed without reaching its end) left on this thread
    must not stall the next flow's partitions."""
    turns = PollTurns()
    assert turns.ask("old+0") and turns.took("old+0", emitted=True) is None
    assert not turns.ask("old+1")  # waited for its turn when its flow ended: it has waited longest of all
    rounds = [[p for p in ("new+0", "new+1") if turns.ask(p) and turns.took(p, emitted=True) is None] for _ in range(8)]
    # one round passes without a poll (the old partitions still count), then the new ones alternate
    assert rounds == [[], *[["new+0"], ["new+1"]] * 3, ["new+0"]]


def test_each_worker_thread_has_its_own_turns() -> None:
    seen: list[PollTurns] = []
    t = threading.Thread(target=lambda: seen.append(worker_turns()))
    t.start()
    t.join()
    assert seen[0] is not worker_turns()


def test_the_source_drains_a_backlog_one_poll_at_a_time(kafka_bootstrap: str) -> None:
    """Three real partition consumers asked as Bytewax asks them: at most one batch with
    rows each time round, and every message once, in offset order per partition."""
    topic = f"turns-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, [topic], partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(300):
        producer.produce(topic, value=b'{"i": %d}' % i, partition=i % 3)
    assert producer.flush(30) == 0
    source = MicroBatchKafkaSource(kafka_bootstrap, [topic], drain=True, batch_size=40, poll_timeout_ms=200)
    parts = {key: source.build_part("kafka_in", key, None) for key in source.list_parts()}
    offsets: dict[str, list[int]] = {key: [] for key in parts}
    live = dict(parts)
    rounds = 0
    while live and rounds < 500:
        rounds += 1
        with_rows = 0
        for key, part in list(live.items()):
            try:
                frames = part.next_batch()
            except StopIteration:
                part.close()
                del live[key]
                continue
            rows = [f for f in frames if f.height]
            with_rows += len(rows)
            for f in rows:
                offsets[key].extend(f["src_offset"].to_list())
        assert with_rows <= 1, f"round {rounds}: {with_rows} polls with rows"
    assert not live
    assert offsets == {key: list(range(100)) for key in parts}


@pytest.fixture(autouse=True)
def _fresh_turns() -> None:
    """Each test's partitions start with this thread's turns empty."""
    import driftline.kafka_io as kio

    kio._turns.turns = PollTurns()
