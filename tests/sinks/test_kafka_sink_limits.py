"""Kafka sink on the real broker: a record over the topic's size limit is delivered cut down
with the original's hash and size in headers, and a record the broker refuses is never
retried as it was (no poison pill)."""

from __future__ import annotations

import hashlib
import random

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from driftline.sinks.kafka import FRAMING_BYTES, KafkaRecordsSink
from driftline.testing.kafka import consume_all

pytestmark = pytest.mark.kafka


def _topic(bootstrap: str, name: str, max_bytes: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config={"max.message.bytes": str(max_bytes)})])
    futures[name].result(30)


def _src(offset: int) -> list[tuple[str, bytes]]:
    return [("driftline.src.topic", b"events"), ("driftline.src.partition", b"0"), ("driftline.src.offset", str(offset).encode())]


def test_oversized_record_is_delivered_cut_down_with_hash_and_size(kafka_bootstrap: str, unique_topic) -> None:
    topic = unique_topic("limit")
    _topic(kafka_bootstrap, topic, 20_000)
    sink = KafkaRecordsSink(kafka_bootstrap, topic).build("out", 0, 1)
    assert sink._sender.limit() == 20_000  # read from the topic's configuration at start-up
    big = b"x" * 100_000
    sink.write_batch([[(b"k1", b"small", _src(1)), (b"k2", big, _src(2))]])
    sink.close()
    msgs = sorted(consume_all(kafka_bootstrap, topic), key=lambda m: m.offset)
    assert [m.value for m in msgs][0] == b"small" and "driftline.truncated" not in msgs[0].headers
    cut = msgs[1]
    assert cut.key == b"k2" and len(cut.value) <= 20_000 - FRAMING_BYTES and big.startswith(cut.value)
    assert cut.headers["driftline.truncated"] == b"value"
    assert cut.headers["driftline.original.size"] == b"100000"
    assert cut.headers["driftline.original.sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert cut.headers["driftline.src.offset"] == b"2"


def test_record_refused_by_the_broker_is_sent_again_cut_down_then_as_a_stub(kafka_bootstrap: str, unique_topic) -> None:
    """The topic's limit shrinks after start-up: the broker refuses the record
    (MSG_SIZE_TOO_LARGE); it is sent again cut down, then as a header-only stub, and the
    batch completes instead of failing on every restart."""
    topic = unique_topic("shrink")
    _topic(kafka_bootstrap, topic, 1_000_000)
    sink = KafkaRecordsSink(kafka_bootstrap, topic).build("out", 0, 1)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[ConfigEntry("max.message.bytes", "2048", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)
    value = random.Random(12).randbytes(500_000)  # incompressible: stays over 2 KB after zstd
    sink.write_batch([[(b"k", value, _src(9))]])
    sink.close()
    msgs = consume_all(kafka_bootstrap, topic)
    assert len(msgs) == 1
    m = msgs[0]
    assert m.headers["driftline.truncated"] in (b"value", b"stub")
    assert m.headers["driftline.error"] == b"MSG_SIZE_TOO_LARGE"
    assert m.headers["driftline.original.size"] == str(len(value)).encode()
    assert m.headers["driftline.src.offset"] == b"9"
