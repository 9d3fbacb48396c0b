"""driftline.tracing without a broker: trace context columns, sampling, step spans and links."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline import tracing
from driftline.config.tracing import TracingConfig
from driftline.operators.decode import RawRecord, decode_batch, header_value
from driftline.sinks.kafka import json_records

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = "00-11111111111111111111111111111111-2222222222222222-00"


def _records(headers: list[str | bytes | None]) -> list[RawRecord]:
    out = []
    for i, h in enumerate(headers):
        value = b'{"event_id":"e%d","event_time":0,"source":"s","text":"hello world %d"}' % (i, i)
        hv = () if h is None else (("traceparent", h if isinstance(h, bytes) else h.encode()),)
        out.append(RawRecord(value, "t", 0, i, 0, headers=hv))
    return out


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True, sample_ratio=1.0, schedule_delay_ms=10), exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.configure(TracingConfig())


def test_off_passes_the_producer_trace_on_and_ignores_bad_headers() -> None:
    assert tracing.current() is None
    hostile = [PARENT, UNSAMPLED, PARENT.upper(), "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "x" * 300, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u00e9".encode(), None]
    batch = tracing.trace_batch(decode_batch(_records(hostile)))
    v = batch.valid
    assert v["trace_id"].to_list() == [PARENT[3:35], UNSAMPLED[3:35], None, None, None, None, None]
    assert v["trace_parent"].to_list() == [PARENT, UNSAMPLED, None, None, None, None, None]
    assert header_value([("traceparent", b"x" * 300)], "traceparent") is None
    # the output record carries it on
    recs = json_records(v.head(2), ["event_id", "trace_id"], "event_id")
    assert [dict(h)["traceparent"] for _, _, h in recs] == [PARENT.encode(), UNSAMPLED.encode()]


def test_on_records_receive_and_step_spans_linked_to_batch_spans(spans: InMemorySpanExporter) -> None:
    batch = tracing.trace_batch(decode_batch(_records([PARENT, UNSAMPLED, None])))
    v = batch.valid
    assert v["trace_id"][0] == PARENT[3:35] and v["trace_id"][1] == UNSAMPLED[3:35] and len(v["trace_id"][2]) == 32
    assert v["trace_parent"][1] == UNSAMPLED  # unsampled: passed on, not recorded
    step = tracing.traced("validate", lambda f: f.with_columns(pl.lit(1).alias("x")))
    step(v)
    assert tracing.flush(10)
    got = spans.get_finished_spans()
    receive = [s for s in got if s.name == "process t"]
    assert len(receive) == 2 and receive[0].parent.span_id == int(PARENT[36:52], 16) and receive[1].parent is None
    records = [s for s in got if s.name == "validate" and s.parent is not None]
    batch_span = [s for s in got if s.name == "validate" and s.parent is None]
    assert len(records) == 2 and len(batch_span) == 1
    assert {s.parent.span_id for s in records} == {s.context.span_id for s in receive}
    assert {link.context.span_id for link in batch_span[0].links} == {s.context.span_id for s in receive}
    assert all(r.links[0].context.span_id == batch_span[0].context.span_id for r in records)
    for s in got:  # nothing of the records in any attribute
        assert not any("hello" in str(a) or "e0" == str(a) for a in s.attributes.values())


def test_sampling_ratio_zero_records_nothing_without_a_parent() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True, sample_ratio=0.0), exporter=exporter)
    try:
        v = tracing.trace_batch(decode_batch(_records([None, None, PARENT]))).valid
        tracing.flush(10)
    finally:
        tracing.configure(TracingConfig())
    assert v["trace_id"].to_list()[:2] == [None, None] and v["trace_id"][2] == PARENT[3:35]
    assert [s.name for s in exporter.get_finished_spans()] == ["process t"]


def test_traced_rows_reads_frames_batches_and_kafka_records() -> None:
    f = pl.DataFrame({"trace_parent": [PARENT, UNSAMPLED, None]})
    assert tracing.traced_rows(f) == [PARENT]
    assert tracing.traced_rows([[(b"k", b"v", [("traceparent", PARENT.encode())]), (b"k", b"v", [])]]) == [PARENT]
    assert tracing.traced_rows((f, pl.DataFrame())) == [PARENT]


def test_record_steps_off_keeps_receive_and_batch_spans_only() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True, sample_ratio=1.0, record_steps=False), exporter=exporter)
    try:
        v = tracing.trace_batch(decode_batch(_records([PARENT, None]))).valid
        tracing.traced("validate", lambda f: f)(v)
        tracing.flush(10)
    finally:
        tracing.configure(TracingConfig())
    got = exporter.get_finished_spans()
    assert sorted((s.name, s.parent is None) for s in got) == [("process t", False), ("process t", True), ("validate", True)]
    assert len([s for s in got if s.name == "validate"][0].links) == 2
