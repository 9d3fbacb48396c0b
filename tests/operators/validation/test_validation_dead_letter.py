"""Validation output through the dead-letter record builder the enrich flow uses."""

from __future__ import annotations

import orjson

from driftline.config.validation import ValidationConfig
from driftline.operators.validation import VALIDATOR_VERSION, Validator, validate_batch
from driftline.sinks.kafka import dead_letter_records


def test_dead_letters_carry_original_bytes_and_reasons(make_batch, event, now):
    raw_bad = b"<\x01 not json"  # (a leading byte 0 would be read as Confluent framing)
    batch = make_batch([raw_bad, event(1, text=""), event(2), None])
    out = validate_batch(batch, Validator.from_config(ValidationConfig()), now)
    records = dead_letter_records(out.rejected, VALIDATOR_VERSION)
    assert len(records) == 3
    by_offset = {int(dict(h)["driftline.src.offset"]): (v, dict(h)) for _, v, h in records}
    assert by_offset[0][0] == raw_bad
    assert by_offset[3][0] is None
    original = batch.valid.filter(batch.valid["src_offset"] == 1)["raw"].item()
    value, headers = by_offset[1]
    assert value == original  # byte for byte
    assert headers["driftline.stage"] == b"schema"
    assert orjson.loads(headers["driftline.reason_codes"]) == ["schema.text_nonempty"]
    assert orjson.loads(headers["driftline.reasons"]) == ["text is empty or only whitespace"]
    assert headers["driftline.validator_version"] == VALIDATOR_VERSION.encode()
    assert orjson.loads(by_offset[0][1]["driftline.reason_codes"]) == ["bad_json"]


def test_reasons_never_carry_record_values(make_batch, event, now):
    cfg = ValidationConfig.model_validate(
        {
            "quality": {"user_id": {"regex": "^u[0-9]+$"}, "attributes.rating": {"min": 1, "max": 5}, "source": {"allowed_values": ["reviews"]}},
            "business_rules": [{"name": "long_text", "expr": "len(text) > 5"}],
        }
    )
    items = [
        event(0, user_id="alice@example.com"),
        event(1, attributes={"rating": "alice@example.com"}),
        event(2, source="alice@example.com"),
        event(3, text="call alice@example.com"),
    ]
    out = validate_batch(make_batch(items), Validator.from_config(cfg), now)
    assert out.rejected.height == 4
    for _, value, headers in dead_letter_records(out.rejected, VALIDATOR_VERSION):
        assert all(b"alice" not in v for _, v in headers)
        assert value is not None and b"alice" in value  # the payload itself stays unchanged
