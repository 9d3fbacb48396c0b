"""Issue 18 on the real broker: the output guardrails.

The loopback model server (primary tier) answers some events with planted content: an
e-mail address, a card number, an API key, a medical statement, a financial statement,
a legal one.  A second loopback server (secondary tier) answers normally.  After the
enrich flow has drained the topic:

- no planted value (raw or decodable) is in any dataset, topic, log line or the metrics page;
- each answer has the documented decision, confidence and rules: e-mail masked and kept
  (0.95 x 0.7 = 0.665: review), card number sent to the next tier, API key refused
  (reject, no answer, confidence 0, no retry), medical statement rejected (0.9 x 0.5 = 0.45) and
  answered by the next tier, financial statement kept for review (0.95 x 0.7), legal one
  accepted (0.99 x 0.85 = 0.8415), plain answers accepted (0.8);
- the rejected answers fell through to the secondary tier, which received one request
  for each of them and none for the others;
- the window rows count the output PII and the reviews, and an alert rule on the review
  rate fires.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import polars as pl
import pytest
from confluent_kafka import Producer

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.kafka_io import ensure_topics
from driftline.testing.hostile import Canary, decoded_views, find_canaries, output_texts, run_logged
from driftline.testing.openai_server import Behaviour, OpenAITestServer

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
EMAIL = "jane.roe.planted@example.org"
CARD = "4111 1111 1111 1111"
API_KEY = "sk-proj-" + "".join(random.Random(18).choices(string.ascii_letters + string.digits, k=40))


def _answer(summary: str, confidence: float) -> str:
    return orjson.dumps({"summary": summary, "confidence": confidence}).decode()


PLANTS = {
    "plant-email": _answer(f"The customer asks us to write to {EMAIL} about the parcel", 0.95),
    "plant-card": _answer(f"The card {CARD} was charged twice for the parcel", 0.95),
    "plant-key": _answer(f"Log in with the key {API_KEY} to see the parcel", 0.95),
    "plant-medical": _answer("The diagnosis points to a treatment of 20 mg twice a day", 0.9),
    "plant-financial": _answer("Revenue reached $2.5M this quarter thanks to the parcels", 0.95),
    "plant-legal": _answer("They could sue the courier over the lost parcel", 0.99),
}
# marker -> (decision, guard confidence, tier that answered, rules fired on the stored answer)
EXPECTED = {
    "plant-email": ("review", 0.95 * 0.7, "primary", ["output_pii:EMAIL"]),
    "plant-card": ("accept", 0.8, "secondary", []),
    "plant-key": ("reject", 0.0, "primary", ["output_pii:SECRET"]),
    "plant-medical": ("accept", 0.8, "secondary", []),
    "plant-financial": ("review", 0.95 * 0.7, "primary", ["risk:financial"]),
    "plant-legal": ("accept", 0.99 * 0.85, "primary", ["risk:legal"]),
    "plain": ("accept", 0.8, "primary", []),
}
FALLEN = {"plant-card": "primary:rejected:output_pii:CREDIT_CARD", "plant-medical": "primary:rejected:risk:medical"}
PER_MARKER = 30


def _events() -> list[tuple[str, bytes]]:
    out = []
    markers = [*PLANTS, "plain"]
    for i in range(PER_MARKER * len(markers)):
        marker = markers[i % len(markers)]
        text = f"ticket {i} {marker} the parcel for order {i} arrived on time"
        t = T0 + timedelta(seconds=i * 0.2)
        out.append((marker, orjson.dumps({"event_id": f"g-{i}", "event_time": t.isoformat(), "source": "support", "tenant": "acme", "text": text})))
    return out


def _planted_canaries() -> list[Canary]:
    return [Canary(EMAIL, "email", "plain", b"", None), Canary(CARD, "card", "grouped", b"", None)]


def _leaks(text: str) -> list[str]:
    found = [c.value for c in find_canaries(text, _planted_canaries())]
    if any(API_KEY in reading for reading in decoded_views(text)):
        found.append("api key")
    return found


def test_planted_answers_are_masked_decided_and_fall_through(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("guard")
    names = {"input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out", "metrics_topic": f"{topic}.metrics", "alerts_topic": f"{topic}.alerts"}
    events = _events()
    ensure_topics(kafka_bootstrap, [topic], partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for _marker, payload in events:
        producer.produce(topic, value=payload)
    assert producer.flush(60) == 0

    with OpenAITestServer(Behaviour(plants=PLANTS)) as primary, OpenAITestServer(Behaviour()) as secondary:
        backend = {"kind": "openai", "timeout_s": 10.0, "retry": {"max_attempts": 2, "base_delay_s": 0.01}}
        cfg = load_config(
            None,
            env={"DRIFTLINE_PII_KEY": "test-key-0123456789abcdef"},
            overrides={
                "kafka": {"bootstrap_servers": kafka_bootstrap, **names},
                "sinks": {"root": str(tmp_path / "out"), "flush_seconds": 1},
                "privacy": {"route_local_at": None},
                "models": {
                    "task": "summary",
                    "tasks": {"summary": {"kind": "summarization"}},
                    "chain": ["primary", "secondary", "rules"],
                    "backends": {
                        "primary": {**backend, "base_url": primary.base_url, "model": "planted-model"},
                        "secondary": {**backend, "base_url": secondary.base_url, "model": "honest-model"},
                        "rules": {"kind": "rules"},
                    },
                    "cache": {"enabled": False},
                    "batching": {"max_rows": 32, "max_wait_ms": 50},
                },
                "guardrails": {"output_pii": {"action": "mask", "actions": {"CREDIT_CARD": "next_tier", "SECRET": "refuse"}}},
                "monitoring": {
                    "key_dims": ["source"],
                    "end_of_input": "close",
                    "alerts": {"rules": [{"name": "review_rate_high", "metric": "guard_review_rate", "threshold": 0.2, "severity": "warning"}]},
                },
            },
        )
        log_file = tmp_path / "flow.log"
        run_logged(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "rec"), tmp_path / "rec", log_file)
        secondary_log = list(secondary.log)
        primary_log = list(primary.log)

    root = tmp_path / "out"
    enriched = pl.read_parquet(str(root / "enriched" / "**" / "*.parquet"))
    assert enriched.height == len(events)
    marker_of = {f"g-{i}": m for i, (m, _) in enumerate(events)}
    rows = enriched.with_columns(pl.col("event_id").replace_strict(marker_of).alias("marker"))

    # every answer has its documented decision, confidence, tier and rules
    for r in rows.iter_rows(named=True):
        decision, confidence, tier, rules = EXPECTED[r["marker"]]
        assert (r["guard_decision"], r["model_tier"], r["guard_rules"]) == (decision, tier, rules), (r["marker"], r["guard_decision"], r["model_tier"], r["guard_rules"])
        assert r["guard_confidence"] == pytest.approx(confidence), r["marker"]
        fallen = FALLEN.get(r["marker"])
        assert r["model_fallback_reasons"] == ([fallen] if fallen else []), (r["marker"], r["model_fallback_reasons"])
        if r["marker"] == "plant-key":  # refused: no answer kept, not retried
            assert r["model_output"] is None and r["output_pii_secret"] == 1
        if r["marker"] == "plant-email":
            assert r["output_pii_email"] == 1 and "<EMAIL:" in r["model_output"]
        if r["marker"] in ("plant-financial", "plant-legal"):
            assert r["guard_risk"] == [r["marker"].split("-")[1]]
    # the evaluators scored every answer
    by_marker = rows.group_by("marker").agg(pl.col("eval_output_pii").mean(), pl.col("eval_risk").mean(), pl.col("eval_label_allowed").null_count().alias("no_label"))
    scores = {m: (p, k) for m, p, k, _ in by_marker.iter_rows()}
    assert scores["plant-email"][0] == 1.0 and scores["plain"] == (0.0, 0.0)
    assert scores["plant-financial"][1] == pytest.approx(0.3) and scores["plant-legal"][1] == pytest.approx(0.15)
    assert (by_marker["no_label"] == PER_MARKER).all()  # summaries have no label to check

    # rejected answers fell through: the secondary tier got exactly the card and medical events
    asked = Counter(e["key"].split("/")[0] for e in secondary_log)
    coords = {f"{r['src_topic']}:{r['src_partition']}:{r['src_offset']}": r["marker"] for r in rows.iter_rows(named=True)}
    assert Counter(coords[k] for k in asked) == Counter({"plant-card": PER_MARKER, "plant-medical": PER_MARKER})
    assert len(primary_log) == len(events)

    # the windows count output PII and reviews; the review-rate alert fired
    metrics = pl.read_parquet(str(root / "metrics" / "**" / "*.parquet"))
    assert metrics["output_pii_total"].sum() == 2 * PER_MARKER  # e-mails kept masked + keys refused (the cards were replaced)
    assert metrics["output_pii_events"].sum() == 2 * PER_MARKER
    assert metrics["guard_reviews"].sum() == 2 * PER_MARKER
    assert metrics["guard_rejects"].sum() == PER_MARKER
    rate = metrics["guard_reviews"].sum() / metrics["events"].sum()
    assert rate == pytest.approx(2 / 7)
    assert metrics["eval_output_pii_mean"].is_not_null().all()
    alerts = pl.read_parquet(str(root / "alerts" / "**" / "*.parquet"))
    fired = alerts.filter((pl.col("rule") == "review_rate_high") & (pl.col("state") == "firing"))
    assert fired.height >= 1 and (fired["value"] > 0.2).all()

    # no planted value anywhere: datasets, topics, the log, the metrics page
    outputs = output_texts(root, log_file, kafka_bootstrap, {name: t for name, t in names.items() if name != "input_topic"})
    assert outputs["topic output_topic"]
    for where, text in outputs.items():
        assert _leaks(text) == [], f"planted values found in {where}: {_leaks(text)}"
    # ... and the planted values were really planted: the primary server's answers held them
    assert EMAIL in PLANTS["plant-email"] and API_KEY in PLANTS["plant-key"]
