"""End to end on the real broker: 10,000 events, a known set breaking each layer.

Afterwards valid + refused = sent; every refused record is in the dead-letter topic
exactly once, with the expected stage and reason and its original bytes unchanged; and
the ``rejected`` Parquet dataset agrees with the topic.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
import pytest
from confluent_kafka import Producer
from fastavro import schemaless_writer

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.kafka_io import ensure_topics
from driftline.operators.decode import AVRO_MAGIC
from driftline.runner import run_flow
from driftline.schemas import load_schema, schema_fingerprint
from driftline.testing.kafka import consume_all

pytestmark = pytest.mark.kafka

TOTAL = 10_000
PER_DEFECT = 40


@dataclass(frozen=True)
class Sent:
    key: bytes
    value: bytes | None
    stage: str | None  # expected refusal stage; None = valid
    code: str | None  # expected first reason code
    warning: str | None = None


def _avro(record: dict) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, load_schema("text_event"), record)
    return AVRO_MAGIC + schema_fingerprint("text_event") + buf.getvalue()


def _events(now_ms: int) -> list[Sent]:
    rnd = random.Random(20260101)
    defects = [
        ("decode", "bad_json"),
        ("decode", "invalid_utf8"),
        ("decode", "truncated_avro"),
        ("decode", "empty_payload"),
        ("decode", "payload_too_large"),
        ("schema", "schema.missing_field.text"),
        ("schema", "schema.text_nonempty"),
        ("schema", "schema.event_time_future"),
        ("schema", "schema.text_too_large"),
        ("schema", "schema.wrong_type.event_time"),
        ("quality", "quality.source.allowed_values"),
        ("quality", "quality.attributes.rating.range"),
        ("business", "business.cheap_but_expensive"),
        (None, "warn"),
    ]
    plan: list[tuple[str | None, str] | None] = [d for d in defects for _ in range(PER_DEFECT)]
    plan += [None] * (TOTAL - len(plan))
    rnd.shuffle(plan)
    out = []
    for i, kind in enumerate(plan):
        eid = f"e2e-{i:05d}"
        rec = {
            "event_id": eid,
            "event_time": now_ms - rnd.randint(1_000, 600_000),
            "source": rnd.choice(["reviews", "support-desk", "chat"]),
            "tenant": "acme",
            "user_id": None,
            "text": f"order {i} arrived late but the staff was friendly",
            "attributes": {"rating": str(rnd.randint(3, 5)), "service_rating": "4", "price_level": "moderate", "price": "15"},
        }
        stage, code = kind if kind else (None, None)
        value: bytes | None
        warning = None
        if code == "bad_json":
            value = orjson.dumps(rec)[:-1]
        elif code == "invalid_utf8":
            value = orjson.dumps(rec).replace(b"arrived", b"arr\xffved")
        elif code == "truncated_avro":
            value = _avro(rec)[:-7]
        elif code == "empty_payload":
            value = None
        elif code == "payload_too_large":
            value = orjson.dumps({**rec, "text": "x" * 9_000})
        else:
            if code == "schema.missing_field.text":
                del rec["text"]
            elif code == "schema.text_nonempty":
                rec["text"] = " \t "
            elif code == "schema.event_time_future":
                rec["event_time"] = now_ms + 3_600_000
            elif code == "schema.text_too_large":
                rec["text"] = "é" * 2_500  # 5,000 bytes > 4,096, payload < 8,192
            elif code == "schema.wrong_type.event_time":
                rec["event_time"] = "last tuesday"
            elif code == "quality.source.allowed_values":
                rec["source"] = "fax"
            elif code == "quality.attributes.rating.range":
                rec["attributes"]["rating"] = "11"
            elif code == "business.cheap_but_expensive":
                rec["attributes"].update(price_level="cheap", price="35")
            elif code == "warn":
                rec["attributes"].update(rating="5", service_rating="1")
                stage, code, warning = None, None, "business.rating_mismatch"
            value = _avro(rec) if i % 10 == 0 and code is None else orjson.dumps(rec)
        out.append(Sent(eid.encode(), value, stage, code, warning))
    return out


def _produce(bootstrap: str, topic: str, events: list[Sent]) -> None:
    ensure_topics(bootstrap, [topic], partitions=3)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    errors: list[str] = []
    for ev in events:
        while True:
            try:
                producer.produce(topic, value=ev.value, key=ev.key, on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:1]


def test_validation_end_to_end_on_the_broker(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("validation-e2e")
    dlq_topic = f"{topic}.dlq"
    cfg = load_config(
        None,
        env={},
        overrides={
            "kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": dlq_topic, "output_topic": f"{topic}.out"},
            "sinks": {"root": str(tmp_path / "out")},
            "decode": {"max_payload_bytes": 8192},
            "validation": {
                "max_text_bytes": 4096,
                "quality": {
                    "source": {"allowed_values": ["reviews", "support-desk", "chat"], "max_null_share": 0.05},
                    "attributes.rating": {"min": 1, "max": 5},
                },
                "business_rules": [
                    {"name": "rating_mismatch", "expr": "attributes.rating == 5 and attributes.service_rating < 3", "severity": "warn"},
                    {"name": "cheap_but_expensive", "expr": "attributes.price_level == 'cheap' and attributes.price > 20", "severity": "error"},
                ],
            },
        },
    )
    sent = _events(int(time.time() * 1000))
    _produce(kafka_bootstrap, topic, sent)
    by_key = {ev.key: ev for ev in sent}
    expected_refused = {ev.key for ev in sent if ev.stage}
    assert len(expected_refused) == 13 * PER_DEFECT

    run_flow(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "recovery"), recovery_dir=tmp_path / "recovery", epoch_interval=2.0)

    # Dead-letter topic: each refused record once, right stage and reason, original bytes.
    dlq = consume_all(kafka_bootstrap, dlq_topic)
    keys = [m.key for m in dlq]
    assert len(keys) == len(set(keys)), "a refused record reached the dead-letter topic twice"
    assert set(keys) == expected_refused
    coords = set()
    for m in dlq:
        ev = by_key[m.key]
        assert m.value == ev.value, f"{ev.code}: dead-letter bytes differ from the original"
        assert m.headers["driftline.stage"].decode() == ev.stage
        codes = orjson.loads(m.headers["driftline.reason_codes"])
        assert codes[0] == ev.code, (ev.code, codes)
        reasons = orjson.loads(m.headers["driftline.reasons"])
        assert len(reasons) == len(codes) and all(reasons)
        assert m.headers["driftline.src.topic"] == topic.encode()
        assert m.headers["driftline.validator_version"]
        coords.add((int(m.headers["driftline.src.partition"]), int(m.headers["driftline.src.offset"]), ev.stage, tuple(codes)))

    # Valid rows: everything else, each once, warnings attached.
    enriched = pl.read_parquet(str(tmp_path / "out" / "enriched" / "**" / "*.parquet"))
    ids = enriched["event_id"].to_list()
    assert len(ids) == len(set(ids))
    assert len(ids) + len(dlq) == TOTAL
    assert {i.encode() for i in ids} == {ev.key for ev in sent if not ev.stage}
    warned = {eid for eid, w in zip(ids, enriched["warnings"].to_list()) if "business.rating_mismatch" in (w or [])}
    assert warned == {ev.key.decode() for ev in sent if ev.warning}

    # The rejected dataset agrees with the topic and holds no raw text.
    rejected = pl.read_parquet(str(tmp_path / "out" / "rejected" / "**" / "*.parquet"))
    assert "raw" not in rejected.columns and "src_key" not in rejected.columns
    assert rejected.filter(pl.col("src_topic") != topic).height == 0
    table = {(p, o, s, tuple(c)) for p, o, s, c in rejected.select("src_partition", "src_offset", "stage", "reason_codes").iter_rows()}
    assert rejected.height == len(dlq)
    assert table == coords
