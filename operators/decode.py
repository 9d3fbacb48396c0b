"""Decode raw Kafka payloads into a typed micro-batch.

Payloads are JSON (UTF-8 object), Avro single-object encoding (``C3 01`` marker, the
8-byte CRC-64-AVRO fingerprint of the writer schema, then the binary datum; no schema
registry needed) or Confluent's wire format (byte 0 and a schema registry id:
:mod:`driftline.operators.decode_confluent`).  They are told apart by the first bytes.

Payloads that cannot be decoded at all are refused at stage ``decode`` with one of
:data:`DECODE_REASONS`.  Payloads that decode but carry a missing or mistyped field
keep the row with that field null and a code in ``field_errors``; the validation
stage refuses them with the rest of the schema checks.

>>> batch = decode_batch([RawRecord(b'{"event_id":"e1","event_time":0,"source":"s","text":"hi"}', "t", 0, 7, 0)])
>>> batch.valid["event_id"].to_list(), batch.rejected.height
(['e1'], 0)
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
from fastavro import schemaless_reader

from driftline.config.kafka import DecodeConfig
from driftline.operators.batch import ATTRIBUTES_DTYPE, COORDINATE_SCHEMA, EVENT_SCHEMA, TIME_DTYPE, MicroBatch, empty_rejects, owned_array, reject_rows, repeated, utf8_lists
from driftline.operators.decode_confluent import CONFLUENT_MAGIC, CONFLUENT_REASONS, ConfluentUndecodable, decode_confluent
from driftline.schemas import SINGLE_OBJECT_MAGIC, load_schema, schema_fingerprint
from driftline.schemas.registry import SchemaRegistry, registry_for

AVRO_MAGIC = SINGLE_OBJECT_MAGIC
AVRO_HEADER_LEN = 10

DECODE_REASONS: dict[str, str] = {
    "empty_payload": "the message has no value (null or zero bytes)",
    "payload_too_large": "the payload is larger than decode.max_payload_bytes",
    "invalid_utf8": "the payload is not valid UTF-8",
    "bad_json": "the payload is not valid JSON",
    "not_an_object": "the JSON payload is not an object",
    "truncated_avro": "the Avro single-object payload ends early",
    "unknown_schema": "the Avro single-object fingerprint matches no known schema",
    "bad_avro": "the Avro datum does not match its schema",
    "unsupported_value": "a field holds a value the decoder cannot represent",
    **CONFLUENT_REASONS,
}

REQUIRED = ("event_id", "event_time", "source", "text")
OPTIONAL = ("tenant", "user_id")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka message as it arrived."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())


class Undecodable(Exception):
    """A payload that cannot be decoded; ``code`` is one of :data:`DECODE_REASONS`."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail

    @property
    def message(self) -> str:
        base = DECODE_REASONS[self.code]
        return f"{base}: {self.detail}" if self.detail else base


def decode_payload(value: bytes | None, limit: int, schema: str = "text_event", registry: SchemaRegistry | None = None) -> tuple[dict[str, Any], str]:
    """``(object, "json" | "avro" | "avro_confluent")`` of a payload whose Avro form uses
    ``schema`` (a name from :mod:`driftline.schemas`; the reader schema of Confluent-framed
    payloads, whose writer schema comes from ``registry``); raises :class:`Undecodable`
    with a reason code."""
    if not value:
        raise Undecodable("empty_payload")
    if len(value) > limit:
        raise Undecodable("payload_too_large", f"{len(value)} bytes > {limit}")
    if value[0] == CONFLUENT_MAGIC:
        try:
            return decode_confluent(value, registry, schema), "avro_confluent"
        except ConfluentUndecodable as exc:
            raise Undecodable(exc.code, exc.detail) from None
    if value[:2] == AVRO_MAGIC:
        if len(value) < AVRO_HEADER_LEN:
            raise Undecodable("truncated_avro", f"{len(value)} bytes, header needs {AVRO_HEADER_LEN}")
        if value[2:AVRO_HEADER_LEN] != schema_fingerprint(schema):
            raise Undecodable("unknown_schema", f"fingerprint {value[2:AVRO_HEADER_LEN].hex()}")
        buf = io.BytesIO(value[AVRO_HEADER_LEN:])
        try:
            record = schemaless_reader(buf, load_schema(schema), None)
        except EOFError as exc:
            raise Undecodable("truncated_avro", str(exc) or "datum ends early") from None
        except UnicodeDecodeError:
            raise Undecodable("invalid_utf8", "an Avro string is not valid UTF-8") from None
        except Exception as exc:  # fastavro raises assorted errors on corrupt data
            raise Undecodable("bad_avro", f"{type(exc).__name__}: {exc}") from None
        if buf.tell() != len(value) - AVRO_HEADER_LEN:
            raise Undecodable("bad_avro", "trailing bytes after the datum")
        return record, "avro"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if value.startswith(b"\xef\xbb\xbf"):
            raise Undecodable("bad_json", "a UTF-8 byte order mark precedes the JSON") from None
        if "UTF-8" in str(exc):
            raise Undecodable("invalid_utf8", str(exc)) from None
        raise Undecodable("bad_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise Undecodable("not_an_object", f"got {type(obj).__name__}")
    return obj, "json"


# Timestamps must fall in years 1..9999 so every consumer can turn them into a datetime.
MIN_EVENT_TIME_MS = -62_135_596_800_000
MAX_EVENT_TIME_MS = 253_402_300_799_999


def parse_payload(value: bytes | None, limit: int = DecodeConfig().max_payload_bytes) -> dict[str, Any] | None:
    """The decoded object of a JSON or Avro single-object payload, or None when undecodable."""
    try:
        return decode_payload(value, limit)[0]
    except Undecodable:
        return None


def _coerce_time(value: Any) -> int | None:
    """Epoch milliseconds from an int/float (ms), a datetime, or an ISO-8601 string.

    Returns None for anything else, including non-finite numbers and instants outside
    years 1..9999 (which would overflow the Int64 millisecond column or its readers).
    """
    ms = _time_ms(value)
    if ms is None or not MIN_EVENT_TIME_MS <= ms <= MAX_EVENT_TIME_MS:
        return None
    return ms


def _time_ms(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return int(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        try:
            return int(dt.timestamp() * 1000)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _coerce_attributes(value: Any, errors: list[str]) -> tuple[list[str], list[str]]:
    """The attributes map as parallel key and value lists (numbers and booleans as JSON text,
    null values dropped); anything else is a ``wrong_type:attributes`` error and no attributes."""
    if value is None:
        return [], []
    if not isinstance(value, dict):
        errors.append("wrong_type:attributes")
        return [], []
    keys: list[str] = []
    vals: list[str] = []
    for k, v in value.items():
        if isinstance(v, str):
            keys.append(str(k))
            vals.append(v)
        elif isinstance(v, (int, float, bool)):
            keys.append(str(k))
            vals.append(orjson.dumps(v).decode())
        elif v is None:
            continue
        else:
            errors.append("wrong_type:attributes")
            return [], []
    return keys, vals


def _event_fields(obj: dict[str, Any], *, coerce_time: bool = True) -> tuple[tuple[Any, ...], tuple[list[str], list[str]], list[str]]:
    """The event fields of one decoded object (in ``_FIELDS`` order), its attributes as
    key and value lists, and its ``field_errors`` codes.  With ``coerce_time=False`` the
    event time is returned as it came (the caller coerces a batch of them at once and adds
    ``wrong_type:event_time`` itself)."""
    errors: list[str] = []
    fields: list[Any] = []
    for name in _STRING_FIELDS:
        v = obj.get(name)
        if v is None:
            if name in REQUIRED:
                errors.append(f"missing_field:{name}")
            fields.append(None)
        elif isinstance(v, str):
            fields.append(v)
        else:
            errors.append(f"wrong_type:{name}")
            fields.append(None)
    t = obj.get("event_time")
    if t is None:
        errors.append("missing_field:event_time")
        fields.append(None)
    elif not coerce_time:
        fields.append(t)
    else:
        ms = _coerce_time(t)
        if ms is None:
            errors.append("wrong_type:event_time")
        fields.append(ms)
    return tuple(fields), _coerce_attributes(obj.get("attributes"), errors), errors


_STRING_FIELDS = ("event_id", "source", "text", *OPTIONAL)
_FIELDS = (*_STRING_FIELDS, "event_time")

SOURCE_SCHEMA: dict[str, pl.DataType] = {**COORDINATE_SCHEMA, "raw": pl.Binary}
"""A raw micro-batch as the Kafka source emits it: one row per message with its
coordinates, key and original bytes (``raw``)."""


def raw_frame(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    topics: str | Sequence[str],
    partitions: int | Sequence[int],
    offsets: Sequence[int],
    timestamps_ms: Sequence[int],
    traceparents: Sequence[str | None] | None = None,
) -> pl.DataFrame:
    """A raw micro-batch (:data:`SOURCE_SCHEMA`) from column lists; a single topic or
    partition is repeated for every row; ``traceparents``: the messages' ``traceparent``
    headers (None: no message has one)."""
    n = len(values)
    topic = repeated("src_topic", topics, n, pl.Utf8) if isinstance(topics, str) else pl.Series("src_topic", topics, dtype=pl.Utf8)
    part = repeated("src_partition", partitions, n, pl.Int32) if isinstance(partitions, int) else pl.Series("src_partition", partitions, dtype=pl.Int32)
    ts = pl.Series("src_timestamp", timestamps_ms, dtype=pl.Int64).cast(TIME_DTYPE)
    tp = pl.Series("src_traceparent", traceparents, dtype=pl.Utf8) if traceparents is not None else repeated("src_traceparent", None, n, pl.Utf8)
    return pl.DataFrame(
        [pl.Series("src_key", keys, dtype=pl.Binary), topic, part, pl.Series("src_offset", offsets, dtype=pl.Int64), ts, tp, pl.Series("raw", values, dtype=pl.Binary)]
    )


def records_frame(records: Sequence[RawRecord]) -> pl.DataFrame:
    """A raw micro-batch from :class:`RawRecord` objects (tests, in-memory sources)."""
    return raw_frame(
        [r.value for r in records], [r.key for r in records], [r.topic for r in records], [r.partition for r in records], [r.offset for r in records], [r.timestamp_ms for r in records],
        [header_value(r.headers, TRACEPARENT) for r in records],
    )  # fmt: skip


#: The W3C trace-context header a producer may set on a record.
TRACEPARENT = "traceparent"


def header_value(headers: Sequence[tuple[str, bytes | None]] | None, name: str, limit: int = 128) -> str | None:
    """The ASCII value of header ``name`` (the first one), or None when absent, not ASCII or
    longer than ``limit`` (a hostile header never costs more than that).

    >>> header_value([("a", b"1"), ("traceparent", b"00-ab")], "traceparent")
    '00-ab'
    """
    if not headers:
        return None
    for k, v in headers:
        if k == name:
            if v is None or len(v) > limit:
                return None
            try:
                return v.decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


RawBatch = pl.DataFrame | Sequence[RawRecord]
"""What the decoders take: a raw frame (the Kafka source) or :class:`RawRecord` objects."""


def as_raw_frame(records: RawBatch) -> pl.DataFrame:
    return records if isinstance(records, pl.DataFrame) else records_frame(records)


#: Event times the vectorized path parses: ISO-8601 UTC instants from 1970 on, in the form
#: producers write (``2026-01-01T00:00:00.000Z``: whole seconds or milliseconds, ``Z``).
#: Anything else goes through :func:`_coerce_time` one by one.
_ISO_UTC_MS = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{3})?Z$"


def _event_times(values: list[Any]) -> pa.Array:
    """Epoch milliseconds (an Arrow int64 array, null where there is no instant) of event
    times already coerced (ints, None) or still strings: :func:`_coerce_time` of each
    string, the common ISO form parsed for the whole batch at once by Polars (with the
    float arithmetic of ``int(datetime.timestamp() * 1000)``, so the same milliseconds),
    the other strings one by one."""
    n = len(values)
    all_strings = set(map(type, values)) <= {str}
    strings = pl.Series(values if all_strings else [v if type(v) is str else None for v in values], dtype=pl.Utf8)
    iso = strings.str.contains(_ISO_UTC_MS).fill_null(False)
    if n == 0 or not iso.any():
        return pa.array([_coerce_time(v) if type(v) is str else v for v in values], pa.int64())
    parsed = strings.str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S%.fZ", strict=False)
    done = (iso & parsed.is_not_null()).to_numpy()
    us = parsed.dt.epoch("us").fill_null(0).to_numpy()
    # datetime.timestamp() is microseconds / 10**6 as a float, then * 1000 and int() truncates
    ms = (us.astype(np.float64) / 1e6 * 1000.0).astype(np.int64)
    null = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(~done).tolist():  # the rest, one by one
        v = values[i]
        m = _coerce_time(v) if type(v) is str else v
        if m is None:
            null[i] = True
        else:
            ms[i] = m
    return owned_array(ms, pa.int64(), mask=null if null.any() else None)


def _types_other_than(values: Iterable[Any], allowed: tuple[type, ...]) -> bool:
    """Whether some value of ``values`` has a type outside ``allowed`` (exact types)."""
    return not set(map(type, values)) <= set(allowed)


#: Parsed objects are read into columns in chunks of this many, then dropped: holding a
#: whole poll's dicts alive would cost more in garbage collection than the reading saves.
_CHUNK = 256
_NO_ATTRIBUTES: dict[str, Any] = {}
_ALLOWED = {name: (str,) if name in REQUIRED else (str, type(None)) for name in _FIELDS}


@dataclass(slots=True)
class _Columns:
    """The decoded fields of a poll's objects, as column lists (one entry per object)."""

    fields: list[list[Any]] = field(default_factory=lambda: [[] for _ in _FIELDS])  # in ``_FIELDS`` order
    attr_lengths: list[int] = field(default_factory=list)
    attr_keys: list[str] = field(default_factory=list)
    attr_values: list[str] = field(default_factory=list)
    errors: dict[int, list[str]] = field(default_factory=dict)  # row -> field_errors, when any
    unsupported: dict[int, str] = field(default_factory=dict)  # row -> exception type name
    rows: int = 0

    def read(self, objs: list[dict[str, Any]]) -> None:
        """Append the fields of ``objs``: read column by column, with the per-row
        :func:`_event_fields` only for rows whose fields are missing or not plain strings,
        whose event time is not a string or whose attributes are not a dict of strings
        (strings are kept for the batch-wide parse of :func:`_event_times`)."""
        get, base = dict.get, self.rows
        cols = [list(map(get, objs, repeat(name))) for name in _FIELDS]
        attrs: list[Any] = list(map(get, objs, repeat("attributes")))
        odd: set[int] = set()
        for name, col in zip(_FIELDS, cols):
            allowed = _ALLOWED[name]
            if _types_other_than(col, allowed):
                odd.update(i for i, v in enumerate(col) if type(v) not in allowed)
        if _types_other_than(attrs, (dict,)):
            odd.update(i for i, a in enumerate(attrs) if type(a) is not dict)
            attrs = [a if type(a) is dict else _NO_ATTRIBUTES for a in attrs]
        key_rows: list[Any] = attrs
        val_rows: list[Any] = list(map(dict.values, attrs))
        if _types_other_than(chain.from_iterable(val_rows), (str,)) or _types_other_than(chain.from_iterable(key_rows), (str,)):
            odd.update(i for i, a in enumerate(attrs) if _types_other_than(a.values(), (str,)) or _types_other_than(a, (str,)))
        if odd:
            key_rows = list(attrs)
            for i in sorted(odd):
                try:
                    row, (keys, vals), errs = _event_fields(objs[i], coerce_time=False)
                    t = row[5]
                    if t is not None and type(t) is not str:  # strings are parsed for the whole batch
                        t = _coerce_time(t)
                        if t is None:
                            errs = _with_time_error(errs)
                except Exception as exc:  # never let one odd value stop the batch
                    self.unsupported[base + i] = type(exc).__name__
                    keys, vals, errs, row, t = [], [], [], (None,) * 5, None
                for col, v in zip(cols, (*row[:5], t)):
                    col[i] = v
                key_rows[i], val_rows[i] = keys, vals
                if errs:
                    self.errors[base + i] = errs
        for out, col in zip(self.fields, cols):
            out.extend(col)
        self.attr_lengths.extend(map(len, key_rows))
        self.attr_keys.extend(chain.from_iterable(key_rows))
        self.attr_values.extend(chain.from_iterable(val_rows))
        self.rows += len(objs)


def decode_batch(records: RawBatch, config: DecodeConfig | None = None, now: datetime | None = None) -> MicroBatch:
    """Decode a poll's worth of raw records into a :class:`MicroBatch`, keeping input order.

    Payloads are parsed one by one (orjson, fastavro for single-object Avro, the
    registry's writer schema for Confluent framing), so each refusal keeps its own
    reason.  The fields are read column by column (see :meth:`_Columns.read`), the
    coordinates and bytes stay in the raw frame's columns (gathered, never copied into
    Python objects), and event times in the common ISO form are parsed for the whole
    batch at once.
    """
    raw = as_raw_frame(records)
    config = config or DecodeConfig()
    limit, registry = config.max_payload_bytes, registry_for(config.schema_registry)
    now = now or datetime.now(timezone.utc)
    columns = _Columns()
    ok: list[int] = []
    other_formats: dict[int, str] = {}  # decoded row -> format, when not "json"
    bad: dict[int, tuple[str, str]] = {}  # input row -> (code, message)
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    values = raw["raw"].to_list()
    for start in range(0, len(values), _CHUNK):
        objs: list[dict[str, Any]] = []
        for j, value in enumerate(values[start : start + _CHUNK], start):
            # Avro and Confluent framing never parse as JSON (C3 01 is not UTF-8, no JSON
            # starts with a NUL), so trying JSON first changes no verdict.
            try:
                obj = loads(value) if value is not None and len(value) <= limit else None
            except decode_error:
                obj = None  # decode_payload below names the reason
            if type(obj) is not dict:
                try:
                    obj, fmt = decode_payload(value, limit, registry=registry)
                except Undecodable as exc:
                    bad[j] = (exc.code, exc.message)
                    continue
                if fmt != "json":
                    other_formats[len(ok)] = fmt
            objs.append(obj)
            ok.append(j)
        columns.read(objs)
    cols, errors, n = columns.fields, columns.errors, len(ok)
    if columns.unsupported:  # drop those rows
        for i, name in columns.unsupported.items():
            bad[ok[i]] = ("unsupported_value", f"{DECODE_REASONS['unsupported_value']}: {name}")
        keep = [i for i in range(n) if i not in columns.unsupported]
        new = {old: k for k, old in enumerate(keep)}
        cols = [[col[i] for i in keep] for col in cols]
        lengths = np.asarray(columns.attr_lengths, dtype=np.int64)
        starts = _offsets(lengths)[:-1]
        kept_items = [k for i in keep for k in range(starts[i], starts[i] + lengths[i])]
        columns.attr_keys = [columns.attr_keys[k] for k in kept_items]
        columns.attr_values = [columns.attr_values[k] for k in kept_items]
        columns.attr_lengths = [columns.attr_lengths[i] for i in keep]
        other_formats = {new[i]: f for i, f in other_formats.items() if i in new}
        errors = {new[i]: e for i, e in errors.items() if i in new}
        ok = [ok[i] for i in keep]
        n = len(ok)
    times = cols[5]
    millis = _event_times(times)
    if millis.null_count:
        for i in np.flatnonzero(millis.is_null().to_numpy(zero_copy_only=False)).tolist():
            if type(times[i]) is str:  # a string that is not an instant in years 1..9999
                errors[i] = _with_time_error(errors.get(i, []))
    if other_formats:
        formats = ["json"] * n
        for i, fmt in other_formats.items():
            formats[i] = fmt
        payload_format = pl.Series("payload_format", formats, dtype=pl.Utf8)
    else:
        payload_format = repeated("payload_format", "json", n, pl.Utf8)
    coords = raw if n == raw.height else raw[ok]
    out = {name: pl.Series(name, values, dtype=pl.Utf8) for name, values in zip(_STRING_FIELDS, cols)}
    out["event_time"] = pl.Series("event_time", millis).cast(TIME_DTYPE)
    out["attributes"] = _attributes(columns)
    out["payload_format"] = payload_format
    out["field_errors"] = utf8_lists("field_errors", [errors.get(i) for i in range(n)])
    out["warnings"] = repeated("warnings", [], n, pl.List(pl.Utf8))
    for s in coords.get_columns():
        out[s.name] = s
    valid = pl.DataFrame([out[name] for name in EVENT_SCHEMA])
    if not bad:
        return MicroBatch(valid=valid, rejected=empty_rejects(), now=now)
    rows = sorted(bad)
    return MicroBatch(valid=valid, rejected=reject_rows(raw[rows], "decode", [[bad[j][0]] for j in rows], [[bad[j][1]] for j in rows]), now=now)


def _attributes(columns: _Columns) -> pl.Series:
    """The ``attributes`` column (:data:`ATTRIBUTES_DTYPE`) from the flat keys and values:
    Polars builds the two string columns, Arrow wraps them in lists by the offsets."""
    pairs = pl.DataFrame([pl.Series("key", columns.attr_keys, dtype=pl.Utf8), pl.Series("value", columns.attr_values, dtype=pl.Utf8)]).to_struct("pairs")
    offsets = owned_array(_offsets(np.asarray(columns.attr_lengths, dtype=np.int64)), pa.int32())
    return pl.Series("attributes", pa.ListArray.from_arrays(offsets, pairs.to_arrow(compat_level=pl.CompatLevel.newest()))).cast(ATTRIBUTES_DTYPE)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """List offsets (``0`` then the running total) of rows of ``lengths`` items."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _with_time_error(errs: list[str]) -> list[str]:
    """``errs`` with ``wrong_type:event_time`` where :func:`_event_fields` puts it: after the
    string fields' codes, before the attributes' code."""
    out = list(errs)
    at = out.index("wrong_type:attributes") if "wrong_type:attributes" in out else len(out)
    out.insert(at, "wrong_type:event_time")
    return out


def columns_frame(cols: dict[str, list[Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    series = []
    for name, dtype in schema.items():
        values = cols[name]
        if dtype == pl.Datetime("ms", "UTC"):
            s = pl.Series(name, values, dtype=pl.Int64).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
        else:
            s = pl.Series(name, values, dtype=dtype)
        series.append(s)
    return pl.DataFrame(series)
