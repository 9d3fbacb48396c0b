from __future__ import annotations

import io
from datetime import datetime, timezone

import orjson
import pytest
from fastavro import schemaless_writer

from driftline.config.kafka import DecodeConfig
from driftline.operators.batch import EVENT_SCHEMA, REJECT_SCHEMA
from driftline.operators.decode import AVRO_MAGIC, DECODE_REASONS, RawRecord, decode_batch
from driftline.schemas import load_schema, schema_fingerprint

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
GOOD = {"event_id": "e1", "event_time": 1_767_225_600_000, "source": "reviews", "text": "hello", "attributes": {"rating": "5"}}


def avro(record: dict) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, load_schema("text_event"), record)
    return AVRO_MAGIC + schema_fingerprint("text_event") + buf.getvalue()


def _avro_record(**over: object) -> dict:
    rec = {"event_id": "a1", "event_time": 1_767_225_600_000, "source": "reviews", "tenant": None, "user_id": None, "text": "hi", "attributes": {"k": "v"}}
    rec.update(over)
    return rec


def decode(*values: bytes | None, config: DecodeConfig | None = None):
    return decode_batch([RawRecord(v, "events", 3, 100 + i, 1_767_225_600_000, key=b"k%d" % i) for i, v in enumerate(values)], config, NOW)


def test_json_and_avro_decode_to_the_same_columns():
    batch = decode(orjson.dumps(GOOD), avro(_avro_record()))
    assert batch.rejected.height == 0
    assert batch.valid.schema == dict(EVENT_SCHEMA)
    rows = batch.valid.select("event_id", "payload_format", "field_errors", "src_key", "src_offset").rows()
    assert rows == [("e1", "json", [], b"k0", 100), ("a1", "avro", [], b"k1", 101)]
    assert batch.valid["attributes"].to_list()[1] == [{"key": "k", "value": "v"}]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "empty_payload"),
        (b"", "empty_payload"),
        (b"{not json", "bad_json"),
        (b"\xef\xbb\xbf{}", "bad_json"),  # a BOM is not JSON
        (b'{"text": "\xff\xfe"}', "invalid_utf8"),
        (b"\xff\xfe\xfd", "invalid_utf8"),
        (b'{"text": "\\ud800"}', "bad_json"),  # lone surrogate escape
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (AVRO_MAGIC + b"\x01\x02", "truncated_avro"),
        (AVRO_MAGIC + b"\x00" * 8 + b"\x02", "unknown_schema"),
    ],
)
def test_undecodable_payloads_are_refused_with_a_reason(value, code):
    batch = decode(value, orjson.dumps(GOOD))
    assert batch.valid["event_id"].to_list() == ["e1"]  # the flow goes on
    assert batch.rejected.height == 1
    row = batch.rejected.row(0, named=True)
    assert (row["stage"], row["reason_codes"]) == ("decode", [code])
    assert row["reasons"][0].startswith(DECODE_REASONS[code])
    assert row["raw"] == value
    assert (row["src_topic"], row["src_partition"], row["src_offset"], row["src_key"]) == ("events", 3, 100, b"k0")
    assert batch.rejected.schema == dict(REJECT_SCHEMA)


def test_truncated_avro_datum_is_refused():
    whole = avro(_avro_record(text="a longer text so the datum has some length"))
    for cut in (12, len(whole) // 2, len(whole) - 1):
        batch = decode(whole[:cut])
        assert batch.rejected["reason_codes"].to_list() == [["truncated_avro"]], cut


def test_avro_with_trailing_bytes_or_bad_utf8_is_refused():
    good = avro(_avro_record())
    assert decode(good + b"\x00").rejected["reason_codes"].to_list() == [["bad_avro"]]
    bad_text = good.replace(b"\x04hi", b"\x04\xff\xfe")
    assert decode(bad_text).rejected["reason_codes"].to_list() == [["invalid_utf8"]]


def test_payload_over_the_size_limit_is_refused():
    big = orjson.dumps({**GOOD, "text": "x" * 200})
    batch = decode(big, config=DecodeConfig(max_payload_bytes=100))
    assert batch.rejected["reason_codes"].to_list() == [["payload_too_large"]]
    assert batch.rejected["reasons"].to_list()[0][0].endswith(f"{len(big)} bytes > 100")


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        ({"text": None}, ["missing_field:text"]),
        ({"event_id": 12}, ["wrong_type:event_id"]),
        ({"event_time": "not a time"}, ["wrong_type:event_time"]),
        ({"event_time": 1e300}, ["wrong_type:event_time"]),  # would overflow Int64
        ({"event_time": 18446744073709551615}, ["wrong_type:event_time"]),
        ({"event_time": "99999-01-01T00:00:00"}, ["wrong_type:event_time"]),
        ({"event_time": True}, ["wrong_type:event_time"]),
        ({"attributes": [1, 2]}, ["wrong_type:attributes"]),
        ({"attributes": {"a": {"nested": 1}}}, ["wrong_type:attributes"]),
        ({"tenant": ["x"]}, ["wrong_type:tenant"]),
    ],
)
def test_field_errors_keep_the_row_for_the_schema_layer(overrides, errors):
    batch = decode(orjson.dumps({**GOOD, **overrides}))
    assert batch.rejected.height == 0
    assert batch.valid["field_errors"].to_list() == [errors]


def test_times_and_attribute_values_are_normalised():
    batch = decode(
        orjson.dumps({**GOOD, "event_time": "2026-01-01T00:00:00Z", "attributes": {"n": 4, "f": 2.5, "b": True, "none": None}}),
        orjson.dumps({**GOOD, "event_time": "2026-01-01T01:00:00+01:00"}),
    )
    assert batch.valid["event_time"].to_list() == [NOW, NOW]
    assert batch.valid["attributes"].to_list()[0] == [{"key": "n", "value": "4"}, {"key": "f", "value": "2.5"}, {"key": "b", "value": "true"}]


def test_a_whole_batch_of_garbage_never_raises():
    values = [None, b"", b"\x00", b"\xc3", b"\xc3\x01", b"{", b"1", b"null", b"{}", orjson.dumps({"event_time": {"a": 1}})] * 10
    batch = decode(*values)
    assert batch.valid.height + batch.rejected.height == len(values)
    assert batch.valid["field_errors"].list.len().min() > 0  # every decodable one still has a field error
