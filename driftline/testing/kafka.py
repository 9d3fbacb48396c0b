"""Read whole topics back from a real broker (for tests and checks)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient


@dataclass(frozen=True)
class ConsumedMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def consume_all(
    bootstrap: str, topic: str, *, timeout: float = 60.0, client_config: Mapping[str, Any] | None = None, isolation: str = "read_committed"
) -> list[ConsumedMessage]:
    """Every message currently in ``topic``, from the beginning to the end of each partition.

    ``client_config``: librdkafka settings of a secured cluster (``KafkaConfig.client_config()``).
    ``isolation``: ``read_committed`` (records of committed transactions only, up to the
    last stable offset) or ``read_uncommitted`` (also records of open and aborted ones).
    """
    base = {**(client_config or {}), "bootstrap.servers": bootstrap}
    md = AdminClient(base).list_topics(topic, timeout=30)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return []
    consumer = Consumer({**base, "group.id": "driftline-test-reader", "enable.auto.commit": False, "enable.partition.eof": True, "isolation.level": isolation})
    parts = sorted(t.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    remaining = set(parts)
    out: list[ConsumedMessage] = []
    deadline = time.monotonic() + timeout
    try:
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                        continue
                    raise RuntimeError(f"reading {topic}: {err}")
                out.append(ConsumedMessage(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), dict(msg.headers() or [])))
    finally:
        consumer.close()
    if remaining:
        raise TimeoutError(f"did not reach the end of {topic} partitions {sorted(remaining)} within {timeout}s")
    return out
