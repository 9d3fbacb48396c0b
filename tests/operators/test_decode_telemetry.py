from __future__ import annotations

from driftline.operators.decode import RawRecord
from driftline.operators.decode_telemetry import decode_telemetry
from driftline.schemas import encode_single_object

CALL = {"call_id": "c1", "event_time": 0, "service": "s", "model": "m", "input_tokens": 1, "output_tokens": 2, "latency_ms": 3.0}


def test_refusals_keep_the_message_key_and_bytes_for_the_dead_letter_topic() -> None:
    good = encode_single_object("model_call", CALL)
    recs = [RawRecord(good, "t", 0, 1, 5, key=b"k1"), RawRecord(b"{not json", "t", 0, 2, 6, key=b"k2"), RawRecord(good[:-1], "t", 1, 3, 7, key=b"k3")]
    batch = decode_telemetry(recs)
    assert batch.valid["call_id"].to_list() == ["c1"]
    assert batch.rejected["src_key"].to_list() == [b"k2", b"k3"]
    assert batch.rejected["raw"].to_list() == [b"{not json", good[:-1]]
    assert batch.rejected["reason_codes"].to_list() == [["bad_json"], ["truncated_avro"]]


def test_an_empty_poll_gives_empty_frames() -> None:
    batch = decode_telemetry([])
    assert batch.valid.height == 0 and batch.rejected.height == 0 and "src_key" in batch.rejected.columns
