"""Kafka sinks: the dead-letter topic and JSON output topics.

Items are :class:`KafkaBatch` lists of ``(key, value, headers)`` tuples built from
micro-batch frames by :func:`dead_letter_records` and :func:`json_records`, grouped by
:func:`source_batches` (by input partition) or :func:`window_batches` (by window key) so
that the exactly-once sink (:mod:`driftline.sinks.kafka_txn`) knows what each batch
covers.  :class:`KafkaRecordsSink` is the at-least-once sink (``kafka.delivery:
at_least_once``); both share :class:`RecordSender`, which keeps one record from stopping
the flow by its size (see :func:`fit_record`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson
import polars as pl
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from driftline.config.kafka import KafkaConfig
from driftline.operators.batch import ENGINE

KafkaRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


class KafkaBatch(list):  # type: ignore[type-arg]
    """Records bound for Kafka (a list of ``(key, value, headers)`` tuples) and what they cover.

    - ``topic``: where they go (None: the sink's own topic);
    - ``cover``: what their positions count in: an input partition (``topic+partition``,
      positions are source offsets) or a window key of a topic (``<topic>|<key>``,
      positions are window starts in epoch milliseconds); None: nothing (never skipped);
    - ``positions``: one int64 per record; a cover's positions only grow from one batch
      to the next, so the exactly-once sink skips, after a restart, every record at or
      below what its last committed transaction covered;
    - ``max_size`` and ``nbytes``: the largest :func:`message_size` of its records and
      their sum (None: unknown, then measured record by record).

    >>> b = KafkaBatch([(b"k", b"v", [])], cover="events+0", positions=np.array([7]))
    >>> b == [(b"k", b"v", [])], b.cover, b.max_size
    (True, 'events+0', None)
    """

    __slots__ = ("topic", "cover", "positions", "max_size", "nbytes")

    def __init__(
        self,
        records: Iterable[KafkaRecord] = (),
        *,
        topic: str | None = None,
        cover: str | None = None,
        positions: np.ndarray | None = None,
        max_size: int | None = None,
        nbytes: int | None = None,
    ) -> None:
        super().__init__(records)
        self.topic = topic
        self.cover = cover
        self.positions = positions
        self.max_size = max_size
        self.nbytes = nbytes

    def with_cover(self, cover: str, positions: np.ndarray, topic: str | None = None) -> KafkaBatch:
        """This batch, covering ``positions`` of ``cover`` (``topic`` kept unless given)."""
        self.cover, self.positions = cover, positions
        if topic is not None:
            self.topic = topic
        return self


def _sized(records: list[KafkaRecord], cols: pl.DataFrame, constant: int) -> KafkaBatch:
    """``records`` as a batch, with sizes computed from ``cols`` (the binary key, value and
    header-value columns they were built from) plus ``constant`` bytes per record (header
    names, constant header values)."""
    if not records:
        return KafkaBatch()
    sizes = cols.select(pl.sum_horizontal([pl.col(c).bin.size().fill_null(0) for c in cols.columns]).alias("n"))["n"]
    return KafkaBatch(records, max_size=int(sizes.max()) + constant, nbytes=int(sizes.sum()) + constant * len(records))  # type: ignore[arg-type]


TRACEPARENT_HEADER = "traceparent"
_SRC_HEADERS = ("driftline.src.topic", "driftline.src.partition", "driftline.src.offset", "driftline.src.timestamp")
_SRC_COLUMNS = ("src_topic", "src_partition", "src_offset")


# header names of every record with source coordinates (plus a traceparent's, an upper bound)
_SRC_HEADER_BYTES = sum(map(len, _SRC_HEADERS)) + len(TRACEPARENT_HEADER)


def _src_header_exprs(frame: pl.DataFrame) -> list[pl.Expr]:
    """The source-coordinate header values of ``frame``'s rows as binary columns: topic,
    partition, offset and timestamp (epoch milliseconds, -1 when unknown); plus the row's
    W3C ``traceparent`` (column ``tp``) when the frame has a ``trace_parent`` column (see
    :mod:`driftline.tracing`)."""
    ts = pl.col("src_timestamp").dt.epoch("ms") if "src_timestamp" in frame.columns else pl.lit(None, pl.Int64)
    tp = [pl.col("trace_parent").cast(pl.Binary).alias("tp")] if "trace_parent" in frame.columns else []
    return [
        *[pl.col(c).cast(pl.Utf8).fill_null("None").cast(pl.Binary) for c in _SRC_COLUMNS],
        ts.fill_null(-1).cast(pl.Utf8).cast(pl.Binary).alias("ts"),
        *tp,
    ]


def _src_header_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """The columns of :func:`_src_header_exprs`."""
    return frame.select(_src_header_exprs(frame))


def _src_headers(cols: pl.DataFrame) -> list[list[tuple[str, bytes]]]:
    """Per row, the source-coordinate headers of :func:`_src_header_columns`, zipped once;
    plus ``traceparent`` where the row has one, so consumers continue the record's trace.

    The headers of a frame from one input partition (every batch of
    :func:`source_batches`) share their topic and partition tuples: only the offset and
    timestamp ones are made per row."""
    h_topic, h_part, h_offset, h_ts = _SRC_HEADERS
    topics, parts = cols.to_series(0), cols.to_series(1)
    offsets, stamps = cols.to_series(2).to_list(), cols.to_series(3).to_list()
    if topics.n_unique() == 1 and parts.n_unique() == 1:
        t, p = (h_topic, topics[0]), (h_part, parts[0])
        rows = [[t, p, (h_offset, o), (h_ts, x)] for o, x in zip(offsets, stamps)]
    else:
        rows = [[(h_topic, t), (h_part, p), (h_offset, o), (h_ts, x)] for t, p, o, x in zip(topics.to_list(), parts.to_list(), offsets, stamps)]
    if "tp" in cols.columns and cols["tp"].null_count() < cols.height:
        for headers, tp in zip(rows, cols["tp"].to_list()):
            if tp is not None:
                headers.append((TRACEPARENT_HEADER, tp))
    return rows


def _json_list(col: str) -> pl.Expr:
    """A ``List(Utf8)`` column as JSON arrays (null as ``[]``), like ``orjson.dumps(value or [])``."""
    wrapped = pl.struct(pl.col(col).fill_null(pl.lit([], pl.List(pl.Utf8))).alias("x")).struct.json_encode()
    return wrapped.str.slice(5, wrapped.str.len_chars() - 6)  # strip '{"x":' and '}'


_DLQ_HEADER_BYTES = sum(map(len, ("driftline.stage", "driftline.reason_codes", "driftline.reasons", "driftline.validator_version"))) + _SRC_HEADER_BYTES


def dead_letter_records(rejected: pl.DataFrame, validator_version: str) -> KafkaBatch:
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
        return KafkaBatch()
    cols = rejected.select(
        pl.col("stage").cast(pl.Utf8).fill_null("None").cast(pl.Binary),
        _json_list("reason_codes").cast(pl.Binary).alias("codes"),
        _json_list("reasons").cast(pl.Binary).alias("reasons"),
        pl.col("src_key") if "src_key" in rejected.columns else pl.lit(None, pl.Binary).alias("src_key"),
        pl.col("raw"),
    )
    src = _src_header_columns(rejected)
    version = validator_version.encode()
    records = [
        (key, raw, [("driftline.stage", stage), ("driftline.reason_codes", codes), ("driftline.reasons", reasons), ("driftline.validator_version", version), *headers])
        for stage, codes, reasons, key, raw, headers in zip(*(cols.to_series(i).to_list() for i in range(5)), _src_headers(src))
    ]
    return _sized(records, pl.concat([cols, src], how="horizontal"), _DLQ_HEADER_BYTES + len(version))


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
        return col.dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").str.replace(".000000+", "+", literal=True)
    if isinstance(dtype, pl.Float32):
        return col.cast(pl.Float64)  # orjson prints the float64 the value becomes in Python
    return col if _orjson_dtype_ok(dtype) else None


def json_records(frame: pl.DataFrame, columns: list[str], key_column: str | None = None) -> KafkaBatch:
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
        return KafkaBatch()
    schema = frame.schema  # built anew on every access: once per call
    cols = [c for c in columns if c in schema and schema[c] != pl.Binary]
    exprs = [_json_column(c, schema[c]) for c in cols]
    if not cols:
        value: pl.Expr | pl.Series = pl.repeat(b"{}", frame.height, dtype=pl.Binary)
    elif all(e is not None for e in exprs):
        value = pl.struct([e.alias(c) for e, c in zip(exprs, cols)]).struct.json_encode().cast(pl.Binary)  # type: ignore[union-attr]
    else:
        rows = frame.select(cols).iter_rows(named=True)
        value = pl.Series([orjson.dumps(row, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY) for row in rows], dtype=pl.Binary)
    key = pl.col(key_column).cast(pl.Utf8).cast(pl.Binary) if key_column and key_column in schema else pl.repeat(None, frame.height, dtype=pl.Binary)
    has_src = set(_SRC_COLUMNS) <= schema.keys()
    # the values on their own (beside other columns Polars would spread the columns over its threads,
    # for more CPU in all; a large frame is cut in slices over its threads instead: _encoded), then
    # the key and header columns
    values_col = value if isinstance(value, pl.Series) else _encoded(frame, value.alias("value"))
    out = frame.select(key.alias("key"), *(_src_header_exprs(frame) if has_src else ())).insert_column(1, values_col.alias("value"))
    keys, values = out.to_series(0).to_list(), out.to_series(1).to_list()
    if has_src:
        return _sized(list(zip(keys, values, _src_headers(out.select(pl.exclude("key", "value"))))), out, _SRC_HEADER_BYTES)
    return _sized([(k, v, []) for k, v in zip(keys, values)], out, 0)


#: Rows per slice when :func:`_encoded` splits a frame over Polars' threads.
ENCODE_SLICE_ROWS = 1_000


def _encoded(frame: pl.DataFrame, value: pl.Expr, slices: int | None = None) -> pl.Series:
    """``value`` (one expression) over ``frame``'s rows: a frame of several
    :data:`ENCODE_SLICE_ROWS` is cut into ``slices`` (default: one per Polars thread),
    encoded at once (``collect_all``); one expression over one frame would run on one thread.

    >>> f = pl.DataFrame({"n": range(3_500)})
    >>> _encoded(f, pl.col("n") * 2, slices=3).equals(f.select(pl.col("n") * 2).to_series())
    True
    """
    slices = min(slices or pl.thread_pool_size(), frame.height // ENCODE_SLICE_ROWS)
    if slices < 2:
        return frame.select(value).to_series()
    step = -(-frame.height // slices)
    parts = pl.collect_all([frame.lazy().slice(start, step).select(value) for start in range(0, frame.height, step)], engine=ENGINE)
    return pl.concat([p.to_series() for p in parts], rechunk=False)


def source_batches(frame: pl.DataFrame, encode: Callable[[pl.DataFrame], KafkaBatch]) -> list[KafkaBatch]:
    """``encode`` applied to the rows of each input partition of ``frame`` (in their
    order), each batch covering its source offsets: after a restart the exactly-once sink
    skips the records its committed transactions hold.  Rows without source coordinates
    form one batch that covers nothing.

    >>> f = pl.DataFrame({"src_topic": ["t", "t", "t"], "src_partition": [0, 1, 0], "src_offset": [5, 2, 6], "id": ["a", "b", "c"]})
    >>> [(b.cover, b.positions.tolist(), len(b)) for b in source_batches(f, lambda p: json_records(p, ["id"]))]
    [('t+0', [5, 6], 2), ('t+1', [2], 1)]
    """
    if frame.height == 0:
        return []
    if not set(_SRC_COLUMNS) <= set(frame.columns):
        return [encode(frame)]
    shape = frame.select(pl.struct("src_topic", "src_partition").n_unique().alias("parts"), pl.any_horizontal(pl.col(_SRC_COLUMNS).is_null()).any().alias("nulls")).row(0)
    if shape[1]:
        return [encode(frame)]
    parts = [frame] if shape[0] == 1 else frame.partition_by(["src_topic", "src_partition"], maintain_order=True)
    return [encode(p).with_cover(f"{p['src_topic'][0]}+{p['src_partition'][0]}", p["src_offset"].cast(pl.Int64).to_numpy()) for p in parts]


def window_batches(frame: pl.DataFrame, topic: str, key_column: str = "key", start_column: str = "window_start") -> list[KafkaBatch]:
    """JSON records of window rows (metrics or alerts) for ``topic``, keyed and grouped by
    window key, each batch covering its window starts (epoch milliseconds): the windows of
    one key are emitted in order, each once, with all its rows together.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> f = pl.DataFrame({"key": ["a", "b"], "window_start": [t, t], "events": [3, 4]})
    >>> [(b.topic, b.cover, b.positions.tolist(), b[0][0]) for b in window_batches(f, "driftline.metrics")]
    [('driftline.metrics', 'driftline.metrics|a', [1767225600000], b'a'), ('driftline.metrics', 'driftline.metrics|b', [1767225600000], b'b')]
    """
    if frame.height == 0:
        return []
    columns = list(frame.columns)
    parts = [frame] if frame[key_column].n_unique() == 1 else frame.partition_by(key_column, maintain_order=True)
    return [
        json_records(p, columns, key_column).with_cover(f"{topic}|{p[key_column][0]}", p[start_column].dt.epoch("ms").to_numpy(), topic)
        for p in parts
    ]


#: ``Producer.produce``'s partition for "the partitioner's choice" (librdkafka's ``RD_KAFKA_PARTITION_UA``).
ANY_PARTITION = -1
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


#: How a record the broker refused is sent again, level by level: alone (the broker
#: refuses a whole produce request, so its other records are suspects too), alone and
#: cut down, alone as a header-only stub.  Never again as it was in its batch.
RETRY_LEVELS = ("alone", "cut down", "stub")


def retried(record: KafkaRecord, limit: int, level: int, err: KafkaError | None) -> KafkaRecord:
    """``record`` as it is sent at ``level`` (0: in its batch, see :data:`RETRY_LEVELS`);
    alone, it is already cut down (naming ``err``) when it no longer fits ``limit``."""
    if level == 0 or level == 1 and message_size(record) + FRAMING_BYTES <= limit:
        return record
    return fit_record(record, limit, stub=level == 3, error=err.name() if err is not None else None)


class RecordSender:
    """A producer and the message size limit of each topic it writes.

    The limit of a topic is its ``max.message.bytes`` (the broker's ``message.max.bytes``
    for a topic still to be created), or the producer's ``message.max.bytes`` if smaller;
    the limits of ``topics`` are read at start-up and cap the producer's batches, those of
    other topics at first use.  :meth:`send` produces a batch, cutting down every record
    larger than its topic's limit (:func:`fit_record`).  A record the client refuses at
    once (:data:`PER_RECORD_ERRORS`) is produced again cut down, then as a stub; records
    the broker refuses later are reported to the ``on_delivery`` callback given.
    """

    def __init__(self, conf: dict[str, Any], topics: Iterable[str]) -> None:
        self.topics = list(topics)
        self.topic = self.topics[0]
        self.conf = conf
        self._max = int(conf.get("message.max.bytes", 1_000_000))
        self._limits: dict[str, int] = {}
        cap = min(self.limit(t) for t in self.topics)
        self.producer = Producer({**conf, "message.max.bytes": cap})

    def limit(self, topic: str | None = None) -> int:
        """The size limit of messages to ``topic`` (default: the sender's first topic)."""
        topic = topic or self.topic
        if topic not in self._limits:
            found = topic_size_limit(self.conf, topic)
            self._limits[topic] = min(self._max, found) if found else self._max
        return self._limits[topic]

    def forget_limits(self) -> None:
        """Read the topics' limits again at next use (after the broker refused a size)."""
        self._limits.clear()

    def send(self, batch: list[KafkaRecord], *, skip: np.ndarray | None = None, on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        """Produce ``batch`` (but the records where ``skip`` is true)."""
        topic = getattr(batch, "topic", None) or self.topic
        limit = self.limit(topic)
        max_size = getattr(batch, "max_size", None)
        fits = max_size is not None and max_size + FRAMING_BYTES <= limit
        records: Iterable[KafkaRecord] = batch if skip is None else (r for r, s in zip(batch, skip.tolist()) if not s)
        produce = self.producer.produce
        for record in records:
            if not fits and message_size(record) + FRAMING_BYTES > limit:
                record = fit_record(record, limit)
            key, value, headers = record
            try:
                # by position (keywords cost ~0.4 µs a call): topic, value, key, partition, callback, on_delivery, timestamp, headers
                produce(topic, value, key, ANY_PARTITION, on_delivery, None, 0, headers)
            except BufferError:  # librdkafka's queue is full: serve deliveries, then again
                self._produce_waiting(topic, record, on_delivery)
            except KafkaException as exc:
                self._produce_cut(topic, record, limit, exc.args[0], on_delivery)

    def send_alone(self, topic: str, record: KafkaRecord, timeout: float, on_delivery: Callable[[Any, Any], None] | None = None) -> KafkaError | None:
        """Produce ``record`` in a produce request of its own and wait for it: the broker's
        refusal (or a timeout), None once delivered."""
        result: list[Any] = []
        self.flush(timeout)

        def noted(err: Any, msg: Any) -> None:
            result.append(err)
            if on_delivery is not None:
                on_delivery(err, msg)

        self.send(KafkaBatch([record], topic=topic), on_delivery=noted)
        self.flush(timeout)  # raises unless the record was delivered or refused
        return result[0] if result else None  # no report: delivered (delivery.report.only.error)

    def flush(self, timeout: float) -> None:
        """Wait until every message is delivered (or refused); raise after ``timeout`` seconds."""
        if self.producer.flush(timeout):
            raise RuntimeError(f"Kafka sink for {self.topic!r}: messages still undelivered after {timeout:.0f} s (broker unreachable?)")

    def as_sent(self, record: KafkaRecord, topic: str) -> KafkaRecord:
        """``record`` as :meth:`send` produces it to ``topic`` (cut down when too large)."""
        limit = self.limit(topic)
        return record if message_size(record) + FRAMING_BYTES <= limit else fit_record(record, limit)

    def refused(self, batches: Iterable[list[KafkaRecord]], failed: list[tuple[KafkaError, str, bytes | None, bytes | None]]) -> list[tuple[KafkaError, str, KafkaRecord]]:
        """The records of ``batches`` whose messages were refused (found by topic, key and
        value as sent), with their errors."""
        wanted = {(t, k, v): e for e, t, k, v in failed}
        out = []
        for batch in batches:
            topic = getattr(batch, "topic", None) or self.topic
            for record in batch:
                sent = self.as_sent(record, topic)
                err = wanted.get((topic, sent[0], sent[1]))
                if err is not None:
                    out.append((err, topic, record))
        return out

    def _produce_waiting(self, topic: str, record: KafkaRecord, on_delivery: Any) -> None:
        key, value, headers = record
        while True:
            self.producer.poll(0.05)
            try:
                self.producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                return
            except BufferError:
                continue

    def _produce_cut(self, topic: str, record: KafkaRecord, limit: int, err: KafkaError, on_delivery: Any) -> None:
        """A record the client refused at once: cut down, then a stub; never as it was."""
        for stub in (False, True):
            if err.code() not in PER_RECORD_ERRORS:
                raise KafkaException(err)
            key, value, headers = fit_record(record, limit, stub=stub, error=err.name())
            try:
                self.producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                return
            except BufferError:
                self._produce_waiting(topic, (key, value, headers), on_delivery)
                return
            except KafkaException as exc:
                err = exc.args[0]
        raise RuntimeError(f"Kafka sink for {topic!r}: a record was refused even as a header-only stub: {err.name()}")


class DeliveryErrors:
    """Collects the messages the broker refused (a delivery callback: ``(err, msg)``) as
    ``(error, topic, key, value)``; delivery reports carry no headers, so the records are
    found again with :meth:`RecordSender.refused`."""

    def __init__(self) -> None:
        self.failed: list[tuple[KafkaError, str, bytes | None, bytes | None]] = []

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append((err, msg.topic(), msg.key(), msg.value()))

    def take(self) -> list[tuple[KafkaError, str, bytes | None, bytes | None]]:
        out, self.failed = self.failed, []
        return out


def check_refusals(errors: Iterable[KafkaError], what: str) -> None:
    """Raise unless every refusal concerns its record alone (:data:`PER_RECORD_ERRORS`)."""
    fatal = sorted({e.name() for e in errors if e.code() not in PER_RECORD_ERRORS})
    if fatal:
        raise RuntimeError(f"{what}: delivery failed: {fatal}")


class _ProducerPartition(StatelessSinkPartition[Any]):
    """Produces each batch, flushes it, and deals with records the broker refuses.

    A record larger than its topic's limit is cut down before it is sent
    (:class:`RecordSender`).  Records the broker still refuses for a reason that concerns
    them alone (:data:`PER_RECORD_ERRORS`) are sent again level by level
    (:data:`RETRY_LEVELS`: alone, cut down, a stub with headers only); never as they were,
    so one record cannot stop the flow.  Other delivery errors (broker unreachable,
    authorization) fail the batch: the flow stops before its snapshot and replays the
    batch on restart (at-least-once)."""

    def __init__(self, sender: RecordSender, timeout: float = 30.0) -> None:
        self._sender = sender
        self._timeout = timeout
        self._errors = DeliveryErrors()  # called for refused records only (delivery.report.only.error)

    def write_batch(self, items: list[Any]) -> None:
        for batch in items:
            self._sender.send(batch, on_delivery=self._errors)
        # Flush before the epoch can close: a snapshot must never cover undelivered messages.
        self._sender.flush(self._timeout)
        failed = self._errors.take()
        if not failed:
            return
        check_refusals((e for e, *_ in failed), f"Kafka sink for {self._sender.topic!r}")
        refused = self._sender.refused(items, failed)  # found as they were sent: before the limits are read again
        if len(refused) < len(failed):
            raise RuntimeError(f"Kafka sink for {self._sender.topic!r}: {len(failed) - len(refused)} refused records not found in their batch")
        self._sender.forget_limits()  # the refusal may come from a topic limit changed since start-up
        _log.warning("records refused by the broker sent again alone", extra={"fields": {"topic": self._sender.topic, "records": len(refused), "errors": sorted({e.name() for e, _t, _r in refused})}})
        for err, topic, record in refused:
            for level in range(1, len(RETRY_LEVELS) + 1):
                check_refusals([err], f"Kafka sink for {topic!r}")
                again = self._sender.send_alone(topic, retried(record, self._sender.limit(topic), level, err), self._timeout, self._errors)
                self._errors.take()
                if again is None:
                    break
                err = again
            else:
                raise RuntimeError(f"Kafka sink for {topic!r}: a record was refused even as a header-only stub: {err.name()}")

    def close(self) -> None:
        self._sender.producer.flush(self._timeout)


#: Producer settings of every Kafka sink (``kafka.extra`` may change them).
PRODUCER_DEFAULTS: dict[str, Any] = {"enable.idempotence": True, "linger.ms": 5, "compression.type": "zstd", "message.max.bytes": 2_000_000}


class KafkaRecordsSink(DynamicSink[Any]):
    """Write :class:`KafkaBatch` items (lists of ``(key, value, headers)`` tuples) to
    ``topic``, or to the topic a batch names (one of ``more_topics``).

    Delivery guarantee: at-least-once (``kafka.delivery: at_least_once``, for brokers
    without transactions).  Every batch is flushed (acknowledged by the broker with an
    idempotent producer) before the step returns, so a recovery snapshot never covers a
    message that was not delivered; after a crash, messages written since the last
    snapshot are written again.  Consumers deduplicate on the ``driftline.src`` header
    (source topic, partition and offset) or, for window rows, on their natural key.

    Size: at start-up the sink reads the topic's ``max.message.bytes`` (the broker's
    ``message.max.bytes`` for a topic still to be created) and uses the smaller of it and
    the producer's ``message.max.bytes``.  A record over it is still delivered, cut down,
    with the original's SHA-256 and size in headers (see :func:`fit_record`): no record
    can stop the flow by its size.
    """

    def __init__(self, bootstrap_servers: str, topic: str, *, more_topics: Iterable[str] = (), extra: dict[str, str] | None = None) -> None:
        self._conf = {"bootstrap.servers": bootstrap_servers, **PRODUCER_DEFAULTS, **(extra or {})}
        self._topic = topic
        self._more = list(more_topics)

    @classmethod
    def from_config(cls, kafka: KafkaConfig, topic: str, *, more_topics: Iterable[str] = ()) -> KafkaRecordsSink:
        """The sink for ``topic`` (and the ``more_topics`` batches may name) with the
        ``kafka`` section's brokers and extra settings."""
        return cls(kafka.bootstrap_servers, topic, more_topics=more_topics, extra=kafka.client_config())

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(RecordSender({**self._conf, "delivery.report.only.error": True}, [self._topic, *self._more]))
