"""Kafka sinks: the dead-letter topic and JSON output topics.

Items are lists of ``(key, value, headers)`` tuples built from micro-batch frames by
:func:`dead_letter_records` and :func:`json_records`.
"""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer

from driftline.config.kafka import KafkaConfig
from driftline.kafka_io import produce_with_backpressure

KafkaRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def _src_headers(row: dict[str, Any]) -> list[tuple[str, bytes]]:
    ts = row.get("src_timestamp")
    ts_ms = int(ts.timestamp() * 1000) if ts is not None else -1
    return [
        ("driftline.src.topic", str(row["src_topic"]).encode()),
        ("driftline.src.partition", str(row["src_partition"]).encode()),
        ("driftline.src.offset", str(row["src_offset"]).encode()),
        ("driftline.src.timestamp", str(ts_ms).encode()),
    ]


def dead_letter_records(rejected: pl.DataFrame, validator_version: str) -> list[KafkaRecord]:
    """Dead-letter messages for refused rows: the ORIGINAL key and bytes, unchanged,
    with headers naming the stage, the reason codes and messages (JSON lists), the
    validator version and the source topic, partition, offset and timestamp, so the
    producer can fix and replay them.

    >>> import polars as pl
    >>> from driftline.operators.batch import reject_rows
    >>> rows = pl.DataFrame({"src_topic": ["t"], "src_partition": [0], "src_offset": [5], "raw": [b"{"]})
    >>> [(k, v, dict(h)["driftline.reason_codes"]) for k, v, h in dead_letter_records(reject_rows(rows, "decode", [["bad_json"]], [["not JSON"]]), "1")]
    [(None, b'{', b'["bad_json"]')]
    """
    out: list[KafkaRecord] = []
    for row in rejected.iter_rows(named=True):
        headers = [
            ("driftline.stage", str(row["stage"]).encode()),
            ("driftline.reason_codes", orjson.dumps(row["reason_codes"] or [])),
            ("driftline.reasons", orjson.dumps(row["reasons"] or [])),
            ("driftline.validator_version", validator_version.encode()),
            *_src_headers(row),
        ]
        out.append((row.get("src_key"), row["raw"], headers))
    return out


def json_records(frame: pl.DataFrame, columns: list[str], key_column: str | None = None) -> list[KafkaRecord]:
    """One JSON object per row with the given columns (binary columns are never sent)."""
    cols = [c for c in columns if c in frame.columns and frame.schema[c] != pl.Binary]
    out: list[KafkaRecord] = []
    if frame.height == 0:
        return out
    has_src = {"src_topic", "src_partition", "src_offset"} <= set(frame.columns)
    for row in frame.iter_rows(named=True):
        body = {c: row[c] for c in cols}
        key = str(row[key_column]).encode() if key_column and row.get(key_column) is not None else None
        out.append((key, orjson.dumps(body, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY), _src_headers(row) if has_src else []))
    return out


class _ProducerPartition(StatelessSinkPartition[Any]):
    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._errors: list[str] = []

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            for key, value, headers in item:
                produce_with_backpressure(self._producer, self._topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
            self._producer.poll(0)
        # Flush before the epoch can close: a snapshot must never cover undelivered messages.
        if self._producer.flush(30) or self._errors:
            raise RuntimeError(f"Kafka sink for {self._topic!r}: delivery failed: {self._errors[:3]}")

    def close(self) -> None:
        self._producer.flush(30)


class KafkaRecordsSink(DynamicSink[Any]):
    """Write lists of ``(key, value, headers)`` tuples to one topic.

    Delivery guarantee: at-least-once.  Every batch is flushed (acknowledged by the
    broker with an idempotent producer) before the step returns, so a recovery
    snapshot never covers a message that was not delivered; after a crash, messages
    written since the last snapshot are written again.  Consumers deduplicate on the
    ``driftline.src`` header (source topic, partition and offset).
    """

    def __init__(self, bootstrap_servers: str, topic: str, *, extra: dict[str, str] | None = None) -> None:
        self._conf = {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "linger.ms": 5, "compression.type": "zstd", "message.max.bytes": 2_000_000, **(extra or {})}
        self._topic = topic

    @classmethod
    def from_config(cls, kafka: KafkaConfig, topic: str) -> KafkaRecordsSink:
        """The sink for ``topic`` with the ``kafka`` section's brokers and extra settings."""
        return cls(kafka.bootstrap_servers, topic, extra=kafka.client_config())

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(Producer(self._conf), self._topic)
