"""Confluent wire format: bytes written by confluent_kafka's own AvroSerializer, writer
schemas fetched over HTTP from a registry speaking Confluent's REST API (the loopback
server of driftline.testing: no registry could be installed here, see docs/security.md),
two schema versions resolved against schemas/text_event.avsc, refusals with reasons,
and an outage that refuses only records whose schema is not cached."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from driftline.config.kafka import DecodeConfig, SchemaRegistryConfig
from driftline.operators.decode import RawRecord, decode_batch
from driftline.schemas.registry import SchemaRegistry
from driftline.testing.schema_registry import TEXT_EVENT_V1, TEXT_EVENT_V2, SchemaRegistryServer, confluent_serializer

V1, V2 = TEXT_EVENT_V1, TEXT_EVENT_V2
_BASE = V1["fields"]
#: v3: registered, but never read before the outage in the test below.
V3 = {**V1, "fields": [*_BASE, {"name": "priority", "type": "int", "default": 0}]}
#: incompatible: text is an int.
BAD = {**V1, "fields": [*_BASE[:3], {"name": "text", "type": "int"}]}

T0 = 1_767_225_600_000


def serializer(registry: SchemaRegistryServer, schema: dict[str, Any]) -> Any:
    return confluent_serializer(registry.url, schema)


def record(i: int, version: int) -> dict[str, Any]:
    r: dict[str, Any] = {"event_id": f"e{i}", "event_time": T0 + i, "source": "crm", "text": f"ticket {i} works fine"}
    if version == 2:
        r.update(tenant=f"t{i % 3}", channel="app", attributes={"rating": str(i % 5)})
    if version == 3:
        r["priority"] = i % 4
    return r


def raw(payloads: list[bytes]) -> list[RawRecord]:
    return [RawRecord(p, "events", 0, i, T0) for i, p in enumerate(payloads)]


@pytest.fixture
def registry() -> Iterator[SchemaRegistryServer]:
    server = SchemaRegistryServer().start()
    yield server
    server.stop()


def config(server: SchemaRegistryServer, **over: Any) -> DecodeConfig:
    return DecodeConfig(schema_registry=SchemaRegistryConfig(url=server.url, **over))


def test_two_schema_versions_decode_with_reader_defaults(registry: SchemaRegistryServer) -> None:
    v1, v2 = serializer(registry, V1), serializer(registry, V2)
    payloads = [v1(record(i, 1)) if i % 2 else v2(record(i, 2)) for i in range(10_000)]
    assert {p[:5] for p in payloads} == {b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x02"}
    batch = decode_batch(raw(payloads), config(registry))
    assert batch.rejected.height == 0 and batch.valid.height == 10_000
    rows = {r["event_id"]: r for r in batch.valid.iter_rows(named=True)}
    assert rows["e1"]["tenant"] is None and rows["e1"]["attributes"] == []  # v1: defaults
    assert rows["e2"]["tenant"] == "t2" and rows["e2"]["attributes"] == [{"key": "rating", "value": "2"}]
    assert rows["e7"]["event_time"] == datetime.fromtimestamp((T0 + 7) / 1000, timezone.utc)
    assert set(batch.valid["payload_format"]) == {"avro_confluent"}
    assert sum(1 for m, _ in registry.requests if m == "GET" and "/schemas/ids/" in _) == 2  # one lookup per id


def test_unknown_id_incompatible_truncated_and_unconfigured_are_refused_with_reasons(registry: SchemaRegistryServer) -> None:
    good = serializer(registry, V1)(record(1, 1))
    incompatible = serializer(registry, BAD)({"event_id": "x", "event_time": T0, "source": "s", "text": 5})
    unknown = b"\x00" + (999).to_bytes(4, "big") + good[5:]
    payloads = [good, unknown, unknown, incompatible, good[:3], good[:-2]]
    batch = decode_batch(raw(payloads), config(registry))
    assert batch.valid["event_id"].to_list() == ["e1"]
    codes = [c[0] for c in batch.rejected["reason_codes"].to_list()]
    assert codes == ["unknown_schema_id", "unknown_schema_id", "incompatible_schema", "truncated_confluent", "truncated_confluent"]
    assert all(r[0] for r in batch.rejected["reasons"].to_list())
    assert [p for m, p in registry.requests if p == "/schemas/ids/999"] == ["/schemas/ids/999"]  # the refusal is remembered
    unconfigured = decode_batch(raw([good]), DecodeConfig())
    assert unconfigured.rejected["reason_codes"].to_list() == [["no_schema_registry"]]


def test_registry_outage_refuses_only_uncached_schemas(registry: SchemaRegistryServer) -> None:
    v1, v2, v3 = serializer(registry, V1), serializer(registry, V2), serializer(registry, V3)
    cfg = config(registry, timeout_s=0.5, retry_interval_s=30)
    warm = decode_batch(raw([v1(record(1, 1)), v2(record(2, 2))]), cfg)
    assert warm.valid.height == 2
    later = [v1(record(3, 1)), v3(record(4, 3)), v2(record(5, 2)), v3(record(6, 3))]
    registry.stop()
    during = decode_batch(raw(later), cfg)
    assert during.valid["event_id"].to_list() == ["e3", "e5"]
    assert during.rejected["reason_codes"].to_list() == [["schema_registry_unavailable"]] * 2
    registry.start()  # back on the same port: after retry_interval_s the uncached id is fetched
    fresh = SchemaRegistry(cfg.schema_registry)
    assert fresh.writer_schema(3)["name"] == "dev.driftline.events.TextEvent"


def test_outage_costs_one_request_per_retry_interval(registry: SchemaRegistryServer) -> None:
    now = [100.0]
    reg = SchemaRegistry(SchemaRegistryConfig(url=registry.url, timeout_s=0.5, retry_interval_s=5), clock=lambda: now[0])
    registry.stop()
    for schema_id in (1, 2, 3):
        with pytest.raises(Exception, match="schema_registry_unavailable"):
            reg.writer_schema(schema_id)
    assert reg.requests == 1
    registry.start()
    serializer(registry, V1)(record(1, 1))
    with pytest.raises(Exception, match="schema_registry_unavailable"):
        reg.writer_schema(1)  # still inside the retry interval
    now[0] += 5.1
    assert reg.writer_schema(1) and reg.requests == 2
