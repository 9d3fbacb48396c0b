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


_SRC_HEADERS = ("driftline.src.topic", "driftline.src.partition", "driftline.src.offset", "driftline.src.timestamp")
_SRC_COLUMNS = ("src_topic", "src_partition", "src_offset")


def _src_headers(frame: pl.DataFrame) -> list[list[tuple[str, bytes]]]:
    """Per row, the source-coordinate headers: topic, partition, offset and timestamp
    (epoch milliseconds, -1 when unknown), built as columns and zipped once."""
    ts = pl.col("src_timestamp").dt.epoch("ms") if "src_timestamp" in frame.columns else pl.lit(None, pl.Int64)
    cols = frame.select(
        *[pl.col(c).cast(pl.Utf8).fill_null("None").cast(pl.Binary) for c in _SRC_COLUMNS],
        ts.fill_null(-1).cast(pl.Utf8).cast(pl.Binary).alias("ts"),
    )
    h_topic, h_part, h_offset, h_ts = _SRC_HEADERS
    return [
        [(h_topic, t), (h_part, p), (h_offset, o), (h_ts, x)]
        for t, p, o, x in zip(*(cols.to_series(i).to_list() for i in range(4)))
    ]


def _json_list(col: str) -> pl.Expr:
    """A ``List(Utf8)`` column as JSON arrays (null as ``[]``), like ``orjson.dumps(value or [])``."""
    wrapped = pl.struct(pl.col(col).fill_null(pl.lit([], pl.List(pl.Utf8))).alias("x")).struct.json_encode()
    return wrapped.str.slice(5, wrapped.str.len_chars() - 6)  # strip '{"x":' and '}'


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
    if rejected.height == 0:
        return []
    cols = rejected.select(
        pl.col("stage").cast(pl.Utf8).fill_null("None").cast(pl.Binary),
        _json_list("reason_codes").cast(pl.Binary).alias("codes"),
        _json_list("reasons").cast(pl.Binary).alias("reasons"),
        pl.col("src_key") if "src_key" in rejected.columns else pl.lit(None, pl.Binary).alias("src_key"),
        pl.col("raw"),
    )
    version = validator_version.encode()
    return [
        (key, raw, [("driftline.stage", stage), ("driftline.reason_codes", codes), ("driftline.reasons", reasons), ("driftline.validator_version", version), *src])
        for stage, codes, reasons, key, raw, src in zip(*(cols.to_series(i).to_list() for i in range(5)), _src_headers(rejected))
    ]


def _orjson_dtype_ok(dtype: pl.DataType) -> bool:
    """Whether Polars' JSON encoder writes ``dtype`` (nested) exactly as orjson writes the
    Python value: numbers, strings, booleans, dates, lists and structs of them."""
    if isinstance(dtype, (pl.List, pl.Array)):
        return _orjson_dtype_ok(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return all(_orjson_dtype_ok(f.dtype) for f in dtype.fields)
    return dtype.is_numeric() and not isinstance(dtype, (pl.Decimal, pl.Float32)) or isinstance(dtype, (pl.Utf8, pl.Boolean, pl.Null, pl.Date, pl.Categorical, pl.Enum))


def _json_column(name: str, dtype: pl.DataType) -> pl.Expr | None:
    """The expression giving column ``name`` the JSON form orjson gives its Python value, or
    None when only orjson can (nested temporals, non-UTC time zones, decimals)."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone not in (None, "UTC"):
            return None
        # orjson: ISO 8601, microseconds only when non-zero, naive times as UTC
        us = col.dt.microsecond()
        frac = pl.when(us != 0).then(pl.lit(".") + us.cast(pl.Utf8).str.zfill(6)).otherwise(pl.lit(""))
        return pl.concat_str([col.dt.strftime("%Y-%m-%dT%H:%M:%S"), frac, pl.lit("+00:00")])
    if isinstance(dtype, pl.Float32):
        return col.cast(pl.Float64)  # orjson prints the float64 the value becomes in Python
    return col if _orjson_dtype_ok(dtype) else None


def json_records(frame: pl.DataFrame, columns: list[str], key_column: str | None = None) -> list[KafkaRecord]:
    """One JSON object per row with the given columns (binary columns are never sent).

    Values are encoded by Polars for the whole frame at once, the same JSON that
    ``orjson.dumps`` gives each row (``OPT_NAIVE_UTC``): tests/sinks/test_kafka_records.py
    compares them byte for byte.  Frames with a type Polars cannot write that way fall
    back to orjson row by row.

    >>> import polars as pl
    >>> [(k, v) for k, v, _ in json_records(pl.DataFrame({"id": ["a"], "score": [0.5], "raw": [b"x"]}), ["id", "score", "raw"], "id")]
    [(b'a', b'{"id":"a","score":0.5}')]
    """
    if frame.height == 0:
        return []
    schema = frame.schema  # built anew on every access: once per call
    cols = [c for c in columns if c in schema and schema[c] != pl.Binary]
    exprs = [_json_column(c, schema[c]) for c in cols]
    if not cols:
        values = [b"{}"] * frame.height
    elif all(e is not None for e in exprs):
        body = pl.struct([e.alias(c) for e, c in zip(exprs, cols)])  # type: ignore[union-attr]
        values = frame.select(body.struct.json_encode().cast(pl.Binary)).to_series().to_list()
    else:
        values = [orjson.dumps(row, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY) for row in frame.select(cols).iter_rows(named=True)]
    if key_column and key_column in frame.columns:
        keys = frame.select(pl.col(key_column).cast(pl.Utf8).cast(pl.Binary)).to_series().to_list()
    else:
        keys = [None] * frame.height
    if set(_SRC_COLUMNS) <= set(frame.columns):
        return list(zip(keys, values, _src_headers(frame)))
    return [(k, v, []) for k, v in zip(keys, values)]


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
