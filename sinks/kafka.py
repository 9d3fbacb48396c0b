"""Kafka sinks: the dead-letter topic and JSON output topics.

Items are lists of ``(key, value, headers)`` tuples built from micro-batch frames by
:func:`dead_letter_records` and :func:`json_records`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Any

import orjson
import polars as pl
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from driftline.config.kafka import KafkaConfig
from driftline.kafka_io import produce_with_backpressure

KafkaRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


TRACEPARENT_HEADER = "traceparent"
_SRC_HEADERS = ("driftline.src.topic", "driftline.src.partition", "driftline.src.offset", "driftline.src.timestamp")
_SRC_COLUMNS = ("src_topic", "src_partition", "src_offset")


def _src_headers(frame: pl.DataFrame) -> list[list[tuple[str, bytes]]]:
    """Per row, the source-coordinate headers: topic, partition, offset and timestamp
    (epoch milliseconds, -1 when unknown), built as columns and zipped once; plus the
    row's W3C ``traceparent`` when it has one (column ``trace_parent``, see
    :mod:`driftline.tracing`), so consumers continue the record's trace."""
    ts = pl.col("src_timestamp").dt.epoch("ms") if "src_timestamp" in frame.columns else pl.lit(None, pl.Int64)
    cols = frame.select(
        *[pl.col(c).cast(pl.Utf8).fill_null("None").cast(pl.Binary) for c in _SRC_COLUMNS],
        ts.fill_null(-1).cast(pl.Utf8).cast(pl.Binary).alias("ts"),
    )
    h_topic, h_part, h_offset, h_ts = _SRC_HEADERS
    rows = [
        [(h_topic, t), (h_part, p), (h_offset, o), (h_ts, x)]
        for t, p, o, x in zip(*(cols.to_series(i).to_list() for i in range(4)))
    ]
    if "trace_parent" in frame.columns and frame["trace_parent"].null_count() < frame.height:
        for headers, tp in zip(rows, frame["trace_parent"].cast(pl.Binary).to_list()):
            if tp is not None:
                headers.append((TRACEPARENT_HEADER, tp))
    return rows


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


#: Bytes reserved in a message for the record-batch and record framing around key, value and headers.
FRAMING_BYTES = 1024
#: Error codes that concern one record only: the record is sent again cut down, never retried as it is.
PER_RECORD_ERRORS = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG, KafkaError._INVALID_ARG, KafkaError._BAD_MSG, KafkaError.INVALID_TIMESTAMP}
)

_log = logging.getLogger("driftline.sinks.kafka")


def message_size(record: KafkaRecord) -> int:
    """Bytes a record takes in a message before framing: key, value and headers."""
    key, value, headers = record
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)


def fit_record(record: KafkaRecord, limit: int, *, stub: bool = False, error: str | None = None) -> KafkaRecord:
    """A record that fits in ``limit`` bytes: the value cut to what fits (``stub``: dropped),
    with headers ``driftline.truncated``, ``driftline.original.sha256`` and
    ``driftline.original.size`` (of the original value), the key cut to 256 bytes when key
    and headers alone would not leave room, and ``driftline.error`` naming the broker's
    refusal when there was one.  The record's other headers (source coordinates) are kept.

    >>> k, v, h = fit_record((b"k", b"x" * 5000, [("driftline.src.offset", b"7")]), 2000)
    >>> len(v) < 2000, dict(h)["driftline.original.size"], dict(h)["driftline.src.offset"]
    (True, b'5000', b'7')
    """
    key, value, headers = record
    raw = value or b""
    extra = [
        ("driftline.truncated", b"stub" if stub else b"value"),
        ("driftline.original.sha256", hashlib.sha256(raw).hexdigest().encode()),
        ("driftline.original.size", str(len(raw)).encode()),
    ]
    if error:
        extra.append(("driftline.error", error.encode()))
    kept = [(k, v) for k, v in headers if not k.startswith(("driftline.truncated", "driftline.original.", "driftline.error"))]
    new_headers = kept + extra
    room = limit - FRAMING_BYTES - message_size((key, b"", new_headers))
    if room < limit // 2 and key is not None and len(key) > 256:
        new_headers.append(("driftline.original.key_sha256", hashlib.sha256(key).hexdigest().encode()))
        key = key[:256]
        room = limit - FRAMING_BYTES - message_size((key, b"", new_headers))
    cut = b"" if stub else raw[: max(0, room)]
    return key, cut, new_headers


def topic_size_limit(conf: dict[str, Any], topic: str, timeout: float = 10.0) -> int | None:
    """The largest message ``topic`` accepts: its ``max.message.bytes``, or the broker's
    ``message.max.bytes`` when the topic does not exist yet (it will be created with the
    broker's default).  None when the cluster cannot be asked."""
    admin = AdminClient({k: v for k, v in conf.items() if k in _ADMIN_KEYS or k.startswith(("security.", "sasl.", "ssl."))})
    try:
        md = admin.list_topics(timeout=timeout)
        if topic in md.topics and md.topics[topic].error is None:
            resource = ConfigResource(ResourceType.TOPIC, topic)
            name = "max.message.bytes"
        else:
            resource = ConfigResource(ResourceType.BROKER, str(next(iter(md.brokers))))
            name = "message.max.bytes"
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
        return int(entries[name].value)
    except Exception as exc:  # noqa: BLE001 - an unreachable cluster must not stop start-up here
        _log.warning("cannot read the message size limit of a topic; using the producer's", extra={"fields": {"topic": topic, "error": type(exc).__name__}})
        return None


_ADMIN_KEYS = frozenset({"bootstrap.servers", "client.id", "socket.timeout.ms", "broker.address.family"})


class _ProducerPartition(StatelessSinkPartition[Any]):
    """Produces each batch, flushes it, and deals with records the broker refuses.

    A record larger than ``limit`` is cut down before it is sent (:func:`fit_record`).  A
    record the broker still refuses for a reason that concerns it alone
    (:data:`PER_RECORD_ERRORS`) is sent again cut down, then as a stub with headers only;
    it is never retried as it was, so one record cannot stop the flow.  Other delivery
    errors (broker unreachable, authorization) fail the batch: the flow stops before its
    snapshot and replays the batch on restart (at-least-once)."""

    def __init__(self, producer: Producer, topic: str, limit: int) -> None:
        self._producer = producer
        self._topic = topic
        self._limit = limit
        self._errors: dict[int, KafkaError] = {}

    def _on_delivery(self, index: int, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors[index] = err

    def _send(self, records: list[KafkaRecord]) -> dict[int, KafkaError]:
        self._errors = {}
        for i, record in enumerate(records):
            key, value, headers = record if message_size(record) + FRAMING_BYTES <= self._limit else fit_record(record, self._limit)
            try:
                produce_with_backpressure(self._producer, self._topic, value=value, key=key, headers=headers, on_delivery=functools.partial(self._on_delivery, i))
            except KafkaException as exc:
                self._errors[i] = exc.args[0]
            self._producer.poll(0)
        # Flush before the epoch can close: a snapshot must never cover undelivered messages.
        if self._producer.flush(30):
            raise RuntimeError(f"Kafka sink for {self._topic!r}: messages still undelivered after 30 s (broker unreachable?)")
        fatal = {i: e for i, e in self._errors.items() if e.code() not in PER_RECORD_ERRORS}
        if fatal:
            codes = sorted({e.name() for e in fatal.values()})
            raise RuntimeError(f"Kafka sink for {self._topic!r}: delivery failed for {len(fatal)} message(s): {codes}")
        return dict(self._errors)

    def write_batch(self, items: list[Any]) -> None:
        records: list[KafkaRecord] = [record for item in items for record in item]
        failed = self._send(records)
        for stub in (False, True):
            if not failed:
                return
            index = list(failed)
            _log.warning(
                "records refused by the broker sent again cut down",
                extra={"fields": {"topic": self._topic, "records": len(index), "stub": stub, "errors": sorted({e.name() for e in failed.values()})}},
            )
            records = [fit_record(records[i], self._limit, stub=stub, error=failed[i].name()) for i in index]
            again = self._send(records)
            failed = {j: again[j] for j in again}
        if failed:
            raise RuntimeError(f"Kafka sink for {self._topic!r}: {len(failed)} record(s) refused even as header-only stubs: {sorted({e.name() for e in failed.values()})}")

    def close(self) -> None:
        self._producer.flush(30)


class KafkaRecordsSink(DynamicSink[Any]):
    """Write lists of ``(key, value, headers)`` tuples to one topic.

    Delivery guarantee: at-least-once.  Every batch is flushed (acknowledged by the
    broker with an idempotent producer) before the step returns, so a recovery
    snapshot never covers a message that was not delivered; after a crash, messages
    written since the last snapshot are written again.  Consumers deduplicate on the
    ``driftline.src`` header (source topic, partition and offset).

    Size: at start-up the sink reads the topic's ``max.message.bytes`` (the broker's
    ``message.max.bytes`` for a topic still to be created) and uses the smaller of it and
    the producer's ``message.max.bytes``.  A record over it is still delivered, cut down,
    with the original's SHA-256 and size in headers (see :func:`fit_record`): no record
    can stop the flow by its size.
    """

    def __init__(self, bootstrap_servers: str, topic: str, *, extra: dict[str, str] | None = None) -> None:
        self._conf = {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "linger.ms": 5, "compression.type": "zstd", "message.max.bytes": 2_000_000, **(extra or {})}
        self._topic = topic

    @classmethod
    def from_config(cls, kafka: KafkaConfig, topic: str) -> KafkaRecordsSink:
        """The sink for ``topic`` with the ``kafka`` section's brokers and extra settings."""
        return cls(kafka.bootstrap_servers, topic, extra=kafka.client_config())

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        producer_limit = int(self._conf["message.max.bytes"])
        topic_limit = topic_size_limit(self._conf, self._topic)
        limit = min(producer_limit, topic_limit) if topic_limit else producer_limit
        return _ProducerPartition(Producer({**self._conf, "message.max.bytes": limit}), self._topic, limit)
