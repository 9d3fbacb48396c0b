from __future__ import annotations

import orjson
import pytest

from driftline.operators.decode import RawRecord, decode_batch
from driftline.producer import DEFECTS, LANGUAGES, SyntheticProducer


def test_same_seed_same_events_and_other_seed_differs() -> None:
    a = [e.payload for e in SyntheticProducer(5, pii_rate=0.3, invalid_rate=0.2).events(200)]
    b = [e.payload for e in SyntheticProducer(5, pii_rate=0.3, invalid_rate=0.2).events(200)]
    c = [e.payload for e in SyntheticProducer(6, pii_rate=0.3, invalid_rate=0.2).events(200)]
    assert a == b
    assert a != c


def test_rates_languages_and_pii_are_honoured() -> None:
    events = list(SyntheticProducer(1, pii_rate=0.25, invalid_rate=0.1).events(4000))
    pii_share = sum(1 for e in events if e.pii) / len(events)
    bad_share = sum(1 for e in events if e.defect) / len(events)
    assert 0.22 < pii_share < 0.28
    assert 0.08 < bad_share < 0.12
    assert {e.language for e in events} == set(LANGUAGES)
    assert {e.defect for e in events if e.defect} == set(DEFECTS)
    for e in events:
        for _kind, value in e.pii:
            assert value in e.record["text"]


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_valid_events_decode_back_to_their_record(fmt: str) -> None:
    events = list(SyntheticProducer(3, pii_rate=0.5, payload_format=fmt).events(50))
    batch = decode_batch([RawRecord(e.payload, "t", 0, i, 0) for i, e in enumerate(events)])
    assert batch.rejected.height == 0
    assert batch.valid["text"].to_list() == [e.record["text"] for e in events]
    assert all(errs == [] for errs in batch.valid["field_errors"].to_list())


def test_defects_are_malformed() -> None:
    events = [e for e in SyntheticProducer(9, invalid_rate=1.0).events(300)]
    batch = decode_batch([RawRecord(e.payload, "t", 0, i, 0) for i, e in enumerate(events)])
    undecodable = batch.rejected.height
    with_field_errors = sum(1 for errs in batch.valid["field_errors"].to_list() if errs)
    oversized = sum(1 for e in events if e.defect == "oversized_text")
    assert undecodable + with_field_errors + oversized == len(events)
    for e in events:
        if e.defect == "oversized_text":
            assert len(orjson.loads(e.payload)["text"].encode()) > 64 * 1024 - 1
