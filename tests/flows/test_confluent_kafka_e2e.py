"""10,000 records written by confluent_kafka's AvroSerializer with two schema versions
(plus records naming a schema id the registry does not know) go through the real broker
and the enrich flow: every known record lands in Parquet, the others are dead-lettered
with their reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from confluent_kafka import Producer

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.kafka_io import ensure_topics, produce_with_backpressure
from driftline.runner import run_flow
from driftline.testing.kafka import consume_all
from driftline.testing.schema_registry import TEXT_EVENT_V1, TEXT_EVENT_V2, SchemaRegistryServer, confluent_serializer

pytestmark = pytest.mark.kafka


def test_confluent_avro_two_versions_through_kafka(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("confluent")
    registry = SchemaRegistryServer().start()
    try:
        v1, v2 = confluent_serializer(registry.url, TEXT_EVENT_V1, topic), confluent_serializer(registry.url, TEXT_EVENT_V2, topic)
        base = [{"event_id": f"e{i}", "event_time": 1_767_225_600_000 + i, "source": "crm", "text": f"ticket {i}: the app works"} for i in range(10_000)]
        payloads = [v1(r) if i % 2 else v2({**r, "tenant": f"t{i % 3}", "channel": "app", "attributes": {"n": str(i)}}) for i, r in enumerate(base)]
        unknown = [b"\x00" + (4242).to_bytes(4, "big") + p[5:] for p in payloads[:40]]
        ensure_topics(kafka_bootstrap, [topic], partitions=3)
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 20})
        for i, p in enumerate(payloads + unknown):
            produce_with_backpressure(producer, topic, value=p, key=str(i).encode())
        assert producer.flush(60) == 0
        cfg = load_config(
            None,
            env={},
            overrides={
                "kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
                "decode": {"schema_registry": {"url": registry.url}},
                "sinks": {"root": str(tmp_path / "out")},
            },
        )
        run_flow(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "rec"), recovery_dir=tmp_path / "rec", epoch_interval=5.0)
    finally:
        registry.stop()
    enriched = pl.read_parquet(str(tmp_path / "out" / "enriched" / "**" / "*.parquet"))
    assert enriched.height == 10_000 and enriched["event_id"].n_unique() == 10_000
    assert set(enriched["payload_format"]) == {"avro_confluent"}
    v2_rows = enriched.filter(pl.col("event_id") == "e2")
    assert v2_rows["tenant"].to_list() == ["t2"]
    dlq = consume_all(kafka_bootstrap, f"{topic}.dlq")
    assert len(dlq) == 40 and {m.value for m in dlq} == set(unknown)  # original bytes, unchanged
    assert all(orjson.loads(m.headers["driftline.reason_codes"]) == ["unknown_schema_id"] for m in dlq)
