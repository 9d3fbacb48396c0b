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


def test_rows_read_column_wise_match_the_row_by_row_reading_across_chunks():
    """Odd rows (missing, mistyped, non-string attributes) spread over several read chunks
    get the same columns, codes and order as when each payload is decoded alone."""
    from driftline.operators import decode as module

    variants = [{}, {"text": None}, {"event_id": 12}, {"event_time": "2026-02-30T00:00:00Z"}, {"attributes": {"n": 1, "s": "x", "z": None}}, {"tenant": 5}, {"attributes": None}]
    values = [orjson.dumps({**GOOD, "event_id": f"e{i}", **variants[i % len(variants)]}) if i % 11 else b"{bad" for i in range(3 * module._CHUNK + 17)]
    whole = decode(*values)
    alone = [decode(v) for v in values]
    assert whole.valid.height == sum(b.valid.height for b in alone) and whole.rejected.height == sum(b.rejected.height for b in alone)
    columns = ["event_id", "event_time", "source", "tenant", "text", "attributes", "field_errors", "payload_format"]
    assert whole.valid.select(columns).rows() == [row for b in alone for row in b.valid.select(columns).rows()]
    assert whole.rejected["reason_codes"].to_list() == [["bad_json"]] * whole.rejected.height


def test_a_value_that_cannot_be_represented_refuses_only_its_row(monkeypatch):
    from driftline.operators import decode as module

    real = module._coerce_time

    def explode(value):
        if value == 666:
            raise OverflowError("no")
        return real(value)

    monkeypatch.setattr(module, "_coerce_time", explode)
    values = [orjson.dumps({**GOOD, "event_id": f"e{i}", "event_time": 666 if i in (3, module._CHUNK + 5) else GOOD["event_time"], "attributes": {"i": i}}) for i in range(module._CHUNK + 9)]
    batch = decode(*values)
    assert batch.rejected["src_offset"].to_list() == [103, 100 + module._CHUNK + 5]
    assert batch.rejected["reason_codes"].to_list() == [["unsupported_value"]] * 2
    kept = [i for i in range(len(values)) if i not in (3, module._CHUNK + 5)]
    assert batch.valid["event_id"].to_list() == [f"e{i}" for i in kept]
    assert batch.valid["attributes"].to_list() == [[{"key": "i", "value": str(i)}] for i in kept]


@pytest.mark.parametrize("suffixes", [(".123Z",), ("Z",), (".123Z", "Z")])
def test_iso_event_times_read_in_bulk_match_the_one_by_one_parse(suffixes):
    """Whole-second and millisecond forms (alone or mixed), leap days and impossible dates."""
    from driftline.operators.decode import _coerce_time, _event_times

    days = ["2024-02-29", "2023-02-29", "2100-02-29", "2000-02-29", "2026-04-31", "2026-12-31", "2026-00-10", "2026-13-01", "1970-01-01", "2199-07-04"]
    values = [f"{d}T23:59:{s:02d}{suffixes[(i + s) % len(suffixes)]}" for i, d in enumerate(days) for s in (0, 59)]
    assert _event_times(values).to_pylist() == [_coerce_time(v) for v in values]
