"""Issue 18 on the real broker: traces exported over OTLP/HTTP to a receiver on loopback.

Records carry a producer's W3C ``traceparent`` header (sampled), an unsampled one, a
malformed one, or none.  With ``tracing.enabled`` the enrich flow exports its spans to a
loopback receiver that decodes real OTLP protobuf (``opentelemetry-proto``).  Checked:

- every enriched row has a ``trace_id``: the producer's when it sent a valid one;
- every traced row's trace holds its ``receive`` span, whose parent is the producer's
  span, one span per step the record went through (children of the receive span), and
  its provider request span (``chat <model>``, GenAI attributes, token usage);
- the provider received the request span's ``traceparent`` and the output topic's record
  carries the row's;
- every step's batch spans link to the records they carried;
- an unsampled producer trace is passed on but not recorded; a malformed header is ignored;
- no span attribute holds text from a record (its text, event id, tenant or user).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import orjson
import polars as pl
import pytest
from confluent_kafka import Producer

from driftline import tracing
from driftline.config import load_config
from driftline.config.tracing import TracingConfig
from driftline.flows.enrich import build_enrich_flow
from driftline.kafka_io import ensure_topics
from driftline.runner import run_flow
from driftline.testing.kafka import consume_all
from driftline.testing.openai_server import Behaviour, OpenAITestServer
from driftline.testing.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.kafka

N = 120
RECORD_STEPS = {"decode", "validate", "mask_pii", "features", "sanitize", "model_call", "guardrails", "output_records", "enriched_parquet", "output_topic_out"}


def _records(rng: random.Random) -> list[dict]:
    out = []
    for i in range(N):
        kind = ("sampled", "sampled", "none", "unsampled", "malformed")[i % 5]
        trace_id, span_id = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
        header = {
            "sampled": f"00-{trace_id}-{span_id}-01",
            "unsampled": f"00-{trace_id}-{span_id}-00",
            "malformed": f"00-{trace_id.upper()}-{span_id}-01 junk",
            "none": None,
        }[kind]
        secret_word = f"zq{rng.getrandbits(40):010x}"  # unique text that must never reach a span
        out.append(
            {
                "kind": kind, "trace_id": trace_id, "span_id": span_id, "header": header, "word": secret_word,
                "payload": orjson.dumps({"event_id": f"evt-{secret_word}", "event_time": 1767225600000 + i, "source": "support", "tenant": f"tenant-{secret_word}",
                                         "user_id": f"user-{secret_word}", "text": f"great service {secret_word}, thanks"}),
            }
        )  # fmt: skip
    return out


def test_every_row_has_its_trace_with_step_and_request_spans(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("traces")
    recs = _records(random.Random(3))
    ensure_topics(kafka_bootstrap, [topic], partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for r in recs:
        producer.produce(topic, value=r["payload"], headers=[("traceparent", r["header"].encode())] if r["header"] else None)
    assert producer.flush(60) == 0

    with OtlpReceiver() as rx, OpenAITestServer(Behaviour()) as srv:
        cfg = load_config(
            None,
            env={},
            overrides={
                "kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
                "sinks": {"root": str(tmp_path / "out"), "flush_seconds": 1},
                "privacy": {"route_local_at": None},
                "models": {
                    "chain": ["primary", "rules"],
                    "backends": {"primary": {"kind": "openai", "base_url": srv.base_url, "model": "trace-model", "timeout_s": 10.0}, "rules": {"kind": "rules"}},
                    "pricing": {"trace-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
                    "cache": {"enabled": False},
                    "batching": {"max_rows": 16, "max_wait_ms": 50},
                },
                "tracing": {"enabled": True, "endpoint": rx.endpoint, "sample_ratio": 1.0, "schedule_delay_ms": 200},
            },
        )
        try:
            run_flow(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "rec"), recovery_dir=tmp_path / "rec", epoch_interval=1.0)
            assert tracing.flush(30)
        finally:
            tracing.configure(TracingConfig())  # off again for the rest of the process
        spans = rx.spans()
        server_log = list(srv.log)
        assert rx.bad_requests == 0

    enriched = pl.read_parquet(str(tmp_path / "out" / "enriched" / "**" / "*.parquet"))
    assert enriched.height == N
    by_word = {r["word"]: r for r in recs}
    rows = {by_word[e.split("-", 1)[1]]["word"]: row for e, row in zip(enriched["event_id"], enriched.iter_rows(named=True))}

    traces: dict[str, list] = defaultdict(list)
    for s in spans:
        traces[s.trace_id].append(s)
    requests_by_trace = {e["traceparent"].split("-")[1]: e["traceparent"] for e in server_log if e["traceparent"]}
    out_headers = {m.headers["traceparent"].decode().split("-")[1]: m.headers["traceparent"].decode() for m in consume_all(kafka_bootstrap, f"{topic}.out") if "traceparent" in m.headers}

    for word, rec in by_word.items():
        row = rows[word]
        tid = row["trace_id"]
        if rec["kind"] in ("sampled", "unsampled"):
            assert tid == rec["trace_id"], rec["kind"]
        if rec["kind"] == "unsampled":  # passed on, not recorded
            assert tid not in traces and out_headers[tid].endswith("-00") and requests_by_trace[tid].endswith("-00")
            continue
        if rec["kind"] == "malformed":
            assert tid != rec["trace_id"] and tid != rec["trace_id"].upper()
        assert tid is not None and len(tid) == 32
        mine = traces[tid]
        receive = [s for s in mine if s.name == f"process {topic}"]
        assert len(receive) == 1, (rec["kind"], [s.name for s in mine])
        recv = receive[0]
        assert recv.kind == 5 and recv.attributes["messaging.system"] == "kafka"  # SPAN_KIND_CONSUMER
        assert recv.parent_span_id == (rec["span_id"] if rec["kind"] == "sampled" else "")
        steps = {s.name for s in mine if s.parent_span_id == recv.span_id and s.attributes.get("driftline.step")}
        assert RECORD_STEPS <= steps, (rec["kind"], sorted(RECORD_STEPS - steps))
        calls = [s for s in mine if s.name == "chat trace-model"]
        assert len(calls) == 1 and calls[0].parent_span_id == recv.span_id and calls[0].kind == 3  # CLIENT
        a = calls[0].attributes
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai" and a["gen_ai.request.model"] == "trace-model"
        assert a["gen_ai.response.model"] == "trace-model" and a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.usage.cache_read.input_tokens" in a
        assert requests_by_trace[tid] == f"00-{tid}-{calls[0].span_id}-01"  # the provider got the request span's context
        assert out_headers[tid] == f"00-{tid}-{recv.span_id}-01"  # the output record continues the trace

    # batch spans: one per step call, each linking the records it carried
    batch = [s for s in spans if s.parent_span_id == "" and s.attributes.get("driftline.step")]
    linked = {link[0] for s in batch if s.name == "validate" for link in s.links}
    assert {rows[w]["trace_id"] for w, r in by_word.items() if r["kind"] != "unsampled"} <= linked

    # nothing of a record's content in any span
    words = [r["word"] for r in recs]
    for s in spans:
        for value in s.attributes.values():
            text = str(value)
            assert not any(w in text for w in words), (s.name, value)
        assert not any(w in s.name for w in words)
