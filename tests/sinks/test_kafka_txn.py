"""The transactional Kafka sink on the real broker: replays after a commit the snapshot
never saw are skipped, a zombie is fenced and its open transaction aborted, a record the
broker refuses inside a transaction is sent again cut down, and metrics and alerts of
one window key share a transaction; read_committed consumers see every record once."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from driftline.sinks.kafka import KafkaBatch
from driftline.sinks import kafka_txn
from driftline.sinks.kafka_txn import SinkCoverage, TransactionalKafkaSink, TransactionalPartition
from driftline.testing.kafka import consume_all

pytestmark = pytest.mark.kafka


def batch(first: int, last: int, cover: str = "in+0", topic: str | None = None, size: int = 20) -> KafkaBatch:
    """Records for source offsets ``first..last`` of ``cover``."""
    offsets = list(range(first, last + 1))
    records = [(str(o).encode(), f"value-{o}".encode().ljust(size, b"."), [("driftline.src.offset", str(o).encode())]) for o in offsets]
    return KafkaBatch(records, topic=topic, cover=cover, positions=np.array(offsets, dtype=np.int64))


def sink(bootstrap: str, topic: str, **kw) -> TransactionalKafkaSink:
    return TransactionalKafkaSink(bootstrap, topic, name=f"test.{uuid.uuid4().hex[:8]}", coverage_topic="driftline.test-coverage", **kw)


def offsets_in(bootstrap: str, topic: str, **kw) -> Counter[int]:
    return Counter(int(m.key) for m in consume_all(bootstrap, topic, **kw))


def test_replay_of_a_committed_epoch_the_snapshot_missed_is_skipped(kafka_bootstrap: str, unique_topic) -> None:
    topic = unique_topic("txn")
    s = sink(kafka_bootstrap, topic)
    part = s.build_part("out", "0", None)
    part.write_batch([batch(0, 49), batch(50, 99)])
    older = part.snapshot()  # epoch 1 committed; this snapshot is durable
    part.write_batch([batch(100, 149)])
    part.snapshot()  # epoch 2 committed, but its snapshot is lost in the crash
    part.write_batch([batch(150, 159)])  # epoch 3 open at the crash: never committed
    # the restart resumes from epoch 1's snapshot and replays from offset 100, in other batches
    again = s.build_part("out", "0", older)
    again.write_batch([batch(100, 129), batch(130, 179)])
    again.write_batch([batch(180, 199)])
    assert again.records_replayed == 50
    again.snapshot()
    again.close()
    seen = offsets_in(kafka_bootstrap, topic)
    assert sorted(seen) == list(range(200)) and set(seen.values()) == {1}
    # a read_uncommitted consumer also sees the aborted epoch 3: the transaction did its job
    assert offsets_in(kafka_bootstrap, topic, isolation="read_uncommitted")[155] == 2


def test_restart_without_any_snapshot_uses_the_coverage_in_kafka(kafka_bootstrap: str, unique_topic) -> None:
    """Killed after the first commit, before any snapshot was stored: no resume state at all."""
    topic = unique_topic("txn-first")
    s = sink(kafka_bootstrap, topic)
    part = s.build_part("out", "0", None)
    part.write_batch([batch(0, 9), batch(0, 4, cover="in+1")])
    part.snapshot()
    again = s.build_part("out", "0", None)
    again.write_batch([batch(0, 19), batch(0, 9, cover="in+1")])
    assert again.records_replayed == 15
    again.close()
    msgs = consume_all(kafka_bootstrap, topic)
    assert len(msgs) == 30


def test_a_cover_moved_to_another_partition_is_not_written_twice(kafka_bootstrap: str, unique_topic) -> None:
    """A routing change (a new version's, or another partition count) moves a cover to
    another sink partition across a crash: the partition it moved to skips what the old
    one committed after the snapshot the restart resumes from."""
    topic = unique_topic("txn-moved")
    s = sink(kafka_bootstrap, topic, partitions=2)
    old = s.build_part("out", "0", None)
    old.write_batch([batch(0, 49)])
    durable = old.snapshot()  # the snapshot the restart resumes from
    old.write_batch([batch(50, 99)])
    old.snapshot()  # committed, but the crash loses this snapshot
    # the restart: a new sink object (a new process) whose routing sends "in+0" to partition 1
    again = TransactionalKafkaSink(kafka_bootstrap, topic, name=s.name, coverage_topic="driftline.test-coverage", partitions=2)
    first = again.build_part("out", "0", durable)
    moved = again.build_part("out", "1", None)
    moved.write_batch([batch(50, 119)])  # the replay from offset 50, on partition 1 now
    assert moved.records_replayed == 50
    for part in (first, moved):
        part.snapshot()
        part.close()
    seen = offsets_in(kafka_bootstrap, topic)
    assert sorted(seen) == list(range(120)) and set(seen.values()) == {1}


def test_a_zombie_is_fenced_and_its_open_transaction_aborted(kafka_bootstrap: str, unique_topic, caplog: pytest.LogCaptureFixture) -> None:
    topic = unique_topic("txn-zombie")
    s = sink(kafka_bootstrap, topic)
    zombie = s.build_part("out", "0", None)
    zombie.write_batch([batch(0, 29)])  # open transaction; its worker "moved"
    successor = s.build_part("out", "0", None)  # the same sink partition, elsewhere
    successor.write_batch([batch(0, 29)])
    successor.snapshot()
    with caplog.at_level("WARNING", logger="driftline.sinks.kafka"), pytest.raises((KafkaException, RuntimeError)) as raised:
        zombie.write_batch([batch(30, 39)])
        zombie.snapshot()
    # the error is logged where it happens (Bytewax's unwinding would hide it), and the
    # close that follows it neither commits nor raises again (which would abort the process)
    failed = [r for r in caplog.records if r.getMessage() == "kafka_sink_failed"]
    assert len(failed) == 1 and type(raised.value).__name__ in failed[0].fields["error"]
    zombie.close()
    assert any(r.getMessage() == "kafka_sink_closed_after_failure" for r in caplog.records)
    seen = offsets_in(kafka_bootstrap, topic)
    assert sorted(seen) == list(range(30)) and set(seen.values()) == {1}


class WedgedOffsets:
    """The real producer, except that ``send_offsets_to_transaction`` blocks until released,
    as librdkafka's does when its cached group coordinator went down (librdkafka#5456)."""

    def __init__(self, producer) -> None:
        self._producer = producer
        self.release = threading.Event()
        self.calls = 0

    def send_offsets_to_transaction(self, *args, **kwargs) -> None:
        self.calls += 1
        self.release.wait(60)

    def __getattr__(self, name: str):
        return getattr(self._producer, name)


def test_a_wedged_producer_is_replaced_and_its_transaction_sent_again(kafka_bootstrap: str, unique_topic, monkeypatch) -> None:
    topic = unique_topic("txn-wedged")
    monkeypatch.setattr(kafka_txn, "CALL_BOUND_S", 1.0)
    part = sink(kafka_bootstrap, topic).build_part("out", "0", None)
    part.write_batch([batch(0, 49)])
    wedged = WedgedOffsets(part._producer)
    part._producer = wedged
    try:
        state = part.snapshot()  # the commit hangs in send_offsets_to_transaction: a new producer commits it
    finally:
        wedged.release.set()
    assert wedged.calls == 1 and part._producer is not wedged
    assert state.positions == {"in+0": 49}
    part.write_batch([batch(50, 99)])
    assert part.snapshot().positions == {"in+0": 99}
    part.close()
    seen = offsets_in(kafka_bootstrap, topic)
    assert sorted(seen) == list(range(100)) and set(seen.values()) == {1}
    # the wedged producer's transaction was aborted when the new one fenced it: sent twice, committed once
    assert offsets_in(kafka_bootstrap, topic, isolation="read_uncommitted")[10] == 2


class CommitTimesOut:
    """The real producer, except that ``commit_transaction`` answers ``_TIMED_OUT`` ("retry
    call to resume") on every call, as librdkafka's did for 240 s after a broker restart in
    the broker-outage test.  ``commits_first``: the first call commits for real and then
    times out all the same (the commit reached the broker, its answer did not arrive)."""

    def __init__(self, producer, *, commits_first: bool = False) -> None:
        self._producer = producer
        self.commits_first = commits_first
        self.calls = 0

    def commit_transaction(self, *args) -> None:
        self.calls += 1
        if self.calls == 1 and self.commits_first:
            self._producer.commit_transaction(*args)
        time.sleep(0.05)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Timed out waiting for operation to finish, retry call to resume", retriable=True))

    def __getattr__(self, name: str):
        return getattr(self._producer, name)


@pytest.mark.parametrize("committed", [False, True], ids=["never-committed", "committed-answer-lost"])
def test_a_commit_that_keeps_timing_out_is_settled_by_a_new_producer(kafka_bootstrap: str, unique_topic, monkeypatch, caplog: pytest.LogCaptureFixture, committed: bool) -> None:
    topic = unique_topic("txn-commit-timeout")
    monkeypatch.setattr(kafka_txn, "COMMIT_BOUND_S", 1.0)
    monkeypatch.setattr(kafka_txn, "COMMIT_CALL_S", 0.1)
    part = sink(kafka_bootstrap, topic).build_part("out", "0", None)
    part.write_batch([batch(0, 49)])
    stuck = CommitTimesOut(part._producer, commits_first=committed)
    part._producer = stuck
    with caplog.at_level("WARNING", logger="driftline.sinks.kafka"):
        state = part.snapshot()  # the commit times out until a new producer settles it
    assert stuck.calls >= 2 and part._producer is not stuck
    settled = [r for r in caplog.records if r.getMessage() == "kafka_commit_settled"]
    assert [r.fields["committed"] for r in settled] == [committed]
    assert state.positions == {"in+0": 49} and state.seq == 1
    part.write_batch([batch(50, 99)])
    assert part.snapshot().positions == {"in+0": 99}
    part.close()
    seen = offsets_in(kafka_bootstrap, topic)
    assert sorted(seen) == list(range(100)) and set(seen.values()) == {1}
    # never committed: the fenced producer's transaction was aborted and its records sent
    # again (twice for read_uncommitted); committed: nothing was sent again
    assert offsets_in(kafka_bootstrap, topic, isolation="read_uncommitted")[10] == (1 if committed else 2)


def test_record_refused_inside_a_transaction_is_sent_again_cut_down(kafka_bootstrap: str, unique_topic) -> None:
    """The topic's limit shrinks after start-up: the broker refuses one record, which breaks
    the transaction; it is aborted and sent again with that record cut down, not failing
    on every restart (no poison pill)."""
    topic = unique_topic("txn-shrink")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config={"max.message.bytes": "1000000"})])[topic].result(30)
    part = sink(kafka_bootstrap, topic).build_part("out", "0", None)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[ConfigEntry("max.message.bytes", "4096", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)
    big = batch(10, 10)
    big[0] = (b"10", random.Random(3).randbytes(300_000), big[0][2])  # incompressible
    part.write_batch([batch(0, 9), big, batch(11, 19)])
    part.snapshot()
    msgs = {int(m.key): m for m in consume_all(kafka_bootstrap, topic)}
    assert sorted(msgs) == list(range(20))
    # cut to the limit read again after the refusal (or, refused again alone, with the broker's error)
    assert msgs[10].headers["driftline.truncated"] in (b"value", b"stub") and msgs[10].headers["driftline.original.size"] == b"300000"
    assert msgs[10].headers["driftline.src.offset"] == b"10" and "driftline.truncated" not in msgs[9].headers


def test_two_topics_of_one_window_key_share_a_transaction(kafka_bootstrap: str, unique_topic) -> None:
    metrics, alerts = unique_topic("txn-metrics"), unique_topic("txn-alerts")
    s = sink(kafka_bootstrap, metrics, partitions=2)
    parts = {p: s.build_part("out", p, None) for p in s.list_parts()}
    items = [s.route(batch(0, 4, cover=f"{metrics}|k{i}", topic=metrics)) for i in range(8)] + [s.route(batch(3, 3, cover=f"{alerts}|k{i}", topic=alerts)) for i in range(8)]
    for p, part in parts.items():
        part.write_batch([b for k, b in items if k == p])
        part.snapshot()
    assert {k for k, _ in items} == {"0", "1"}  # window keys spread over both producers
    assert all(items[i][0] == items[8 + i][0] for i in range(8))  # a key's metrics and alerts: one producer
    assert len(consume_all(kafka_bootstrap, metrics)) == 40 and len(consume_all(kafka_bootstrap, alerts)) == 8
    # a replay of the same windows (the alerts' window replayed too) adds nothing
    for p in parts:
        again = s.build_part("out", p, SinkCoverage())
        again.write_batch([b for k, b in items if k == p])
        again.close()
    assert len(consume_all(kafka_bootstrap, metrics)) == 40 and len(consume_all(kafka_bootstrap, alerts)) == 8


def test_partition_state_is_the_committed_coverage(kafka_bootstrap: str, unique_topic) -> None:
    part: TransactionalPartition = sink(kafka_bootstrap, unique_topic("txn-state")).build_part("out", "0", None)
    part.write_batch([batch(0, 9), batch(5, 7, cover="in+2")])
    state = part.snapshot()
    assert state == SinkCoverage({"in+0": 9, "in+2": 7}, 1)
    assert part.snapshot() == state  # nothing written: no transaction, same state
    part.close()


def test_json_records_reach_the_topic_byte_for_byte(kafka_bootstrap: str, unique_topic) -> None:
    """Key, value and every header, in their order, as :func:`json_records` made them, with
    and without a skip mask (a replay): what the per-record produce loop sends is the record."""
    import polars as pl
    from confluent_kafka import Consumer, TopicPartition

    from driftline.kafka_io import ensure_topics
    from driftline.sinks.kafka import json_records, source_batches

    topic = unique_topic("txn-bytes")
    ensure_topics(kafka_bootstrap, [topic], partitions=1)
    n = 40
    frame = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "text": ["é \"q\"\n" * (i % 3) for i in range(n)],
            "score": [i / 7 for i in range(n)],
            "src_topic": ["events"] * n,
            "src_partition": pl.Series([1] * n, dtype=pl.Int32),
            "src_offset": list(range(n)),
            "trace_parent": [f"00-{i:032x}-{i:016x}-01" if i % 4 == 0 else None for i in range(n)],
        }
    )
    (records,) = source_batches(frame, lambda p: json_records(p, ["event_id", "text", "score"], "event_id"))
    s = sink(kafka_bootstrap, topic)
    part = s.build_part("out", "0", SinkCoverage({"events+1": 9}, 1))  # offsets 0..9 already committed
    part.write_batch([records])
    part.snapshot()
    part.close()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"bytes-{uuid.uuid4().hex[:6]}", "isolation.level": "read_committed", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    try:
        while True:
            msg = consumer.poll(10)
            assert msg is not None, "no end of partition within 10 s"
            if msg.error() is not None:
                break  # end of partition
            got.append((msg.key(), msg.value(), msg.headers() or []))
    finally:
        consumer.close()
    assert got == list(records)[10:]
    assert [int(dict(h)["driftline.src.offset"]) for _k, _v, h in got if h[-1][0] == "traceparent"] == list(range(12, n, 4))
