"""Issue 5's end-to-end privacy check: nothing unmasked leaves the pipeline.

Events carrying structured PII run through the enrich flow on the real broker; then
every output is scanned for the raw values that were sent: all Parquet datasets, the
output, metrics and alerts topics, the dead-letter topic (its masking setting is on
here), the flow's JSON log file and the Prometheus metrics page.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.producer import SyntheticProducer, produce
from driftline.testing.hostile import parquet_texts, run_logged, topic_text

pytestmark = pytest.mark.kafka

STRUCTURED = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "SECRET")
PRODUCER_REGIONS = ["US", "DE", "FR", "ES", "IT", "BR", "NL"]


def _parquet_text(root: Path) -> str:
    texts = parquet_texts(root)
    assert texts, f"no Parquet files under {root}"
    return "\n".join(texts.values())


def test_no_raw_pii_in_any_output(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("pii")
    names = {"input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out", "metrics_topic": f"{topic}.metrics", "alerts_topic": f"{topic}.alerts"}
    cfg = load_config(
        None,
        env={"DRIFTLINE_PII_KEY": "test-key-0123456789abcdef"},
        overrides={
            "kafka": {"bootstrap_servers": kafka_bootstrap, **names},
            "sinks": {"root": str(tmp_path / "out"), "flush_seconds": 1},
            "privacy": {"mask_dead_letter": True, "phone_regions": PRODUCER_REGIONS},
        },
    )
    gen = SyntheticProducer(21, pii_rate=0.7, invalid_rate=0.05, pii_types=STRUCTURED)
    sent = produce(kafka_bootstrap, topic, 1500, generator=gen, progress=False)
    values = sorted({v for e in sent for _t, v in e.pii})
    assert len(values) > 800
    # user ids are pseudonymized too
    user_ids = sorted({e.record["user_id"] for e in sent if e.record.get("user_id")})

    log_file = tmp_path / "flow.log"
    run_logged(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "rec"), tmp_path / "rec", log_file)

    outputs = {
        "parquet": _parquet_text(tmp_path / "out"),
        "log": log_file.read_text(encoding="utf-8"),
        "metrics page": generate_latest(REGISTRY).decode(),
        **{name: topic_text(kafka_bootstrap, t) for name, t in names.items() if name != "input_topic"},
    }
    assert outputs["output_topic"] and outputs["dead_letter_topic"] and outputs["log"]
    for where, text in outputs.items():
        leaked = [v for v in values if v in text]
        assert leaked == [], f"{len(leaked)} raw PII values found in {where}, e.g. {leaked[:3]}"
        leaked_users = [u for u in user_ids if f'"{u}"' in text]
        assert leaked_users == [], f"raw user ids found in {where}: {leaked_users[:3]}"
    # and the masked data is still there: tokens of the same value join across datasets
    assert "<EMAIL:" in outputs["parquet"] and "<EMAIL:" in outputs["output_topic"]
