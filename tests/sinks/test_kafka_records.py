"""The vectorized Kafka record encoders give the same bytes as orjson row by row."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
import polars as pl

from driftline.config import load_config
from driftline.operators.batch import reject_rows
from driftline.producer import SyntheticProducer
from driftline.sinks.kafka import ENCODE_SLICE_ROWS, _encoded, dead_letter_records, json_records, message_size


def reference_json_records(frame: pl.DataFrame, columns: list[str], key_column: str | None) -> list[tuple[Any, bytes, list[tuple[str, bytes]]]]:
    """The row-by-row encoder the vectorized one replaced (orjson on each row's dict)."""
    cols = [c for c in columns if c in frame.columns and frame.schema[c] != pl.Binary]
    has_src = {"src_topic", "src_partition", "src_offset"} <= set(frame.columns)
    out = []
    for row in frame.iter_rows(named=True):
        key = str(row[key_column]).encode() if key_column and row.get(key_column) is not None else None
        value = orjson.dumps({c: row[c] for c in cols}, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY)
        ts = row.get("src_timestamp")
        headers = (
            [
                ("driftline.src.topic", str(row["src_topic"]).encode()),
                ("driftline.src.partition", str(row["src_partition"]).encode()),
                ("driftline.src.offset", str(row["src_offset"]).encode()),
                ("driftline.src.timestamp", str(int(ts.timestamp() * 1000) if ts is not None else -1).encode()),
            ]
            if has_src
            else []
        )
        out.append((key, value, headers))
    return out


TRICKY_STRINGS = ['plain', 'quote " and \\ backslash', "new\nline\ttab\r\x00\x01\x1f\x7f", "é ü 中文 😀 \u2028\u2029 \ufeff", "", "</script>&<>'", None]


def tricky_frame(n: int = 300, seed: int = 3) -> pl.DataFrame:
    rng = random.Random(seed)
    floats = [0.0, -0.0, 1.0, 0.1, 1 / 3, 1e-7, 1e16, 1e21, 1e22, 5e-324, 1.7976931348623157e308, 123456789.123, float("nan"), float("inf"), float("-inf"), None]
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    times = [base, base + timedelta(milliseconds=100), base + timedelta(microseconds=1), datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc), None]
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" if i % 7 else None for i in range(n)],
            "text": [rng.choice(TRICKY_STRINGS) for _ in range(n)],
            "score": [rng.choice(floats) for _ in range(n)],
            "f32": pl.Series([rng.choice([0.1, 2.5, None]) for _ in range(n)], dtype=pl.Float32),
            "count": pl.Series([rng.choice([0, 1, 2**31, None]) for _ in range(n)], dtype=pl.Int64),
            "u32": pl.Series([rng.randint(0, 2**32 - 1) for _ in range(n)], dtype=pl.UInt32),
            "flag": [rng.choice([True, False, None]) for _ in range(n)],
            "event_time": pl.Series([rng.choice(times) for _ in range(n)], dtype=pl.Datetime("ms", "UTC")),
            "naive_us": pl.Series([datetime(2026, 5, 6, 7, 8, 9, rng.choice([0, 1, 999999])) for _ in range(n)], dtype=pl.Datetime("us")),
            "utc_ns": pl.Series([rng.choice([1767225600_000000000, 1767225600_000000999, 1767225600_123456789, -1_500, None]) for _ in range(n)], dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
            "day": [rng.choice([date(2026, 1, 2), None]) for _ in range(n)],
            "tags": pl.Series([rng.choice([[], ["a", None], None, ["😀", 'x"y']]) for _ in range(n)], dtype=pl.List(pl.Utf8)),
            "findings": pl.Series(
                [rng.choice([[], [{"type": "EMAIL", "start": 1, "end": 5, "score": 0.5}], None, [{"type": None, "start": None, "end": 2, "score": float("nan")}]]) for _ in range(n)],
                dtype=pl.List(pl.Struct({"type": pl.Utf8, "start": pl.Int32, "end": pl.Int32, "score": pl.Float64})),
            ),
            "attrs": pl.Series([rng.choice([{"k": "v", "n": 1}, None, {"k": None, "n": None}]) for _ in range(n)], dtype=pl.Struct({"k": pl.Utf8, "n": pl.Int64})),
            "cat": pl.Series([rng.choice(["a", "b"]) for _ in range(n)], dtype=pl.Categorical),
            "raw": [b"never sent"] * n,
            "src_topic": ["events"] * n,
            "src_partition": pl.Series([i % 3 for i in range(n)], dtype=pl.Int32),
            "src_offset": list(range(n)),
            "src_timestamp": pl.Series([rng.choice(times) for _ in range(n)], dtype=pl.Datetime("ms", "UTC")),
        }
    )


def test_json_records_equal_orjson_byte_for_byte() -> None:
    frame = tricky_frame()
    columns = list(frame.columns)
    assert json_records(frame, columns, "event_id") == reference_json_records(frame, columns, "event_id")
    # slices (offsets into shared buffers) and frames without coordinates or a key
    part = frame.slice(17, 40)
    assert json_records(part, ["text", "score", "event_time"], None) == reference_json_records(part, ["text", "score", "event_time"], None)
    bare = frame.select("event_id", "score")
    assert json_records(bare, ["event_id", "score"], "event_id") == reference_json_records(bare, ["event_id", "score"], "event_id")
    assert json_records(frame.clear(), columns, "event_id") == []


def test_json_records_of_a_frame_cut_over_polars_threads_equal_orjson() -> None:
    """A frame of several ``ENCODE_SLICE_ROWS`` is encoded in slices at once: the records
    and their order are those of one encoding, byte for byte, and the batch's sizes still
    bound its records' (the sink trusts them to skip measuring each record)."""
    frame = tricky_frame(n=2 * ENCODE_SLICE_ROWS + 7, seed=5)
    columns = list(frame.columns)
    got = json_records(frame, columns, "event_id")
    assert got == reference_json_records(frame, columns, "event_id")
    assert got.max_size >= max(message_size(r) for r in got) and got.nbytes >= sum(message_size(r) for r in got)
    # two slices (whatever the machine's thread count): the JSON of one encoding, in order
    value = pl.struct(pl.col("event_id"), pl.col("text"), pl.col("tags")).struct.json_encode()
    assert _encoded(frame, value, slices=2).equals(frame.select(value).to_series())


def test_json_records_fall_back_to_orjson_for_types_polars_writes_differently() -> None:
    frame = pl.DataFrame(
        {
            "when": pl.Series([datetime(2026, 1, 1, 12, tzinfo=timezone.utc)], dtype=pl.Datetime("ms", "Europe/Berlin")),
            "nested": pl.Series([[datetime(2026, 1, 1)]], dtype=pl.List(pl.Datetime("ms"))),
        }
    )
    assert json_records(frame, ["when", "nested"]) == reference_json_records(frame, ["when", "nested"], None)


def test_output_topic_records_of_a_real_enriched_frame() -> None:
    """The frame the enrich flow sends to the output topic, from producer events (with PII)."""
    from driftline.flows.enrich import EnrichIO, build_enrich_flow
    from driftline.testing import InMemorySink, micro_batch_source, raw_batches
    from bytewax.testing import run_main
    import tempfile

    cfg = load_config(None, env={"DRIFTLINE__SINKS__ROOT": tempfile.mkdtemp()})
    payloads = [e.payload for e in SyntheticProducer(9, pii_rate=0.5, invalid_rate=0.05).events(400)]
    out, dlq = InMemorySink(), InMemorySink()
    run_main(build_enrich_flow(cfg, io=EnrichIO(micro_batch_source(raw_batches(payloads, batch_size=100)), dlq, out)))
    records = [r for batch in out.items for r in batch]
    assert len(records) > 300
    for key, value, headers in records:
        body = orjson.loads(value)
        assert key == body["event_id"].encode()
        assert dict(headers)["driftline.src.offset"] == str(body["src_offset"]).encode()
        assert isinstance(body["pii_findings"], list) and body["event_time"].endswith("+00:00")
        assert "raw" not in body and "src_key" not in body
        assert all(not isinstance(v, float) or math.isfinite(v) for v in body.values())


def test_dead_letter_records_equal_the_row_by_row_headers() -> None:
    rows = pl.DataFrame(
        {
            "src_key": [b"k1", None, b"k3"],
            "src_topic": ["t", "t", "t"],
            "src_partition": [0, 1, 2],
            "src_offset": [5, 6, 7],
            "src_timestamp": pl.Series([datetime(2026, 1, 1, tzinfo=timezone.utc), None, datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc)], dtype=pl.Datetime("ms", "UTC")),
            "raw": [b"{", b"\xff", None],
        }
    )
    rejected = reject_rows(rows, "decode", [["bad_json"], ["invalid_utf8", "x"], []], [['not "JSON"\n'], ["é"], []])
    got = dead_letter_records(rejected, "1.2.3")
    expected = []
    for row in rejected.iter_rows(named=True):
        ts = row["src_timestamp"]
        expected.append(
            (
                row["src_key"],
                row["raw"],
                [
                    ("driftline.stage", b"decode"),
                    ("driftline.reason_codes", orjson.dumps(row["reason_codes"] or [])),
                    ("driftline.reasons", orjson.dumps(row["reasons"] or [])),
                    ("driftline.validator_version", b"1.2.3"),
                    ("driftline.src.topic", b"t"),
                    ("driftline.src.partition", str(row["src_partition"]).encode()),
                    ("driftline.src.offset", str(row["src_offset"]).encode()),
                    ("driftline.src.timestamp", str(int(ts.timestamp() * 1000) if ts else -1).encode()),
                ],
            )
        )
    assert got == expected
