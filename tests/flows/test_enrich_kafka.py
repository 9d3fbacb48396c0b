"""Walking skeleton on the real broker: 1,000 events, 5% malformed, drained."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.producer import produce
from driftline.runner import run_flow
from driftline.testing.kafka import consume_all

pytestmark = pytest.mark.kafka


def _total(name: str) -> float:
    """Sum of a counter over all label sets of the enrich flow."""
    from prometheus_client import REGISTRY

    return sum(s.value for m in REGISTRY.collect() for s in m.samples if s.name == name and s.labels.get("flow") == "enrich")


def test_every_event_lands_exactly_once(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("skeleton")
    cfg = load_config(
        None,
        env={},
        overrides={
            "kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
            "sinks": {"root": str(tmp_path / "out")},
        },
    )
    sent = produce(kafka_bootstrap, topic, 1000, seed=11, invalid_rate=0.05, pii_rate=0.0, progress=False)
    malformed = [e for e in sent if e.defect]
    valid = [e for e in sent if not e.defect]
    assert 25 <= len(malformed) <= 80  # ~5% of 1,000

    before = {name: _total(name) for name in ("driftline_events_in_total", "driftline_events_out_total", "driftline_events_rejected_total")}
    run_flow(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "recovery"), recovery_dir=tmp_path / "recovery", epoch_interval=2.0)
    assert _total("driftline_events_in_total") - before["driftline_events_in_total"] == 1000
    assert _total("driftline_events_out_total") - before["driftline_events_out_total"] == len(valid)
    assert _total("driftline_events_rejected_total") - before["driftline_events_rejected_total"] == len(malformed)

    enriched = pl.read_parquet(str(tmp_path / "out" / "enriched" / "**" / "*.parquet"))
    ids = enriched["event_id"].to_list()
    assert len(ids) == len(set(ids)), "an event was written twice"
    assert set(ids) == {e.record["event_id"] for e in valid}

    dlq = consume_all(kafka_bootstrap, f"{topic}.dlq")
    by_payload: dict[bytes, list] = {}
    for m in dlq:
        by_payload.setdefault(m.value, []).append(m)
    for ev in malformed:
        copies = by_payload.get(ev.payload, [])
        assert len(copies) == 1, f"{ev.defect}: expected once in the dead-letter topic, found {len(copies)}"
        reasons = orjson.loads(copies[0].headers["driftline.reasons"])
        assert reasons and all(isinstance(r, str) and r for r in reasons)
        assert copies[0].headers["driftline.src.topic"] == topic.encode()
    assert len(dlq) == len(malformed)

    rejected = pl.read_parquet(str(tmp_path / "out" / "rejected" / "**" / "*.parquet"))
    assert rejected.height == len(malformed)
    assert "raw" not in rejected.columns and "src_key" not in rejected.columns
