"""Issue 12, on the real broker: no disguised PII gets through.

1,000 canary values (e-mails, phones, cards, SSNs, IBANs) are sent in more than fifteen
disguises (Base64, zero-width, soft hyphen, NUL and bidi characters, HTML entities,
percent-escapes, fullwidth digits, one digit at a time, dots, NBSP, tabs, double spaces,
new lines, lower-case IBANs, dotted SSNs, and in event_id, source, tenant, attribute keys
and values, and the Kafka key).  After the enrich flow has run (dead-letter masking on,
a remote model tier on the loopback test server), no canary may be found raw or decodable
(Base64, entities, percent-escapes, invisible characters) in any Parquet dataset, Kafka
topic, log line, the metrics page, or any request body the model server received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.kafka_io import ensure_topics
from driftline.testing.hostile import canary_records, find_canaries, output_texts, run_logged
from driftline.testing.openai_server import Behaviour, OpenAITestServer

pytestmark = pytest.mark.kafka


class RecordingServer(OpenAITestServer):
    """The loopback model server, keeping every request body it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[bytes] = []

    def _handle_completion(self, h: Any, raw: bytes) -> None:
        self.bodies.append(raw)
        super()._handle_completion(h, raw)


def test_no_canary_raw_or_decodable_anywhere(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    canaries = canary_records(12, 1000)
    assert len(canaries) >= 1000 and len({c.disguise for c in canaries}) >= 15
    topic = unique_topic("canary")
    names = {"input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out", "metrics_topic": f"{topic}.metrics", "alerts_topic": f"{topic}.alerts"}
    ensure_topics(kafka_bootstrap, [topic], partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for c in canaries:
        producer.produce(topic, value=c.payload, key=c.key)
        producer.poll(0)
    assert producer.flush(60) == 0

    with RecordingServer(Behaviour(latency_s=0.0)) as srv:
        cfg = load_config(
            None,
            env={"DRIFTLINE_PII_KEY": "test-key-0123456789abcdef"},
            overrides={
                "kafka": {"bootstrap_servers": kafka_bootstrap, **names},
                "sinks": {"root": str(tmp_path / "out"), "flush_seconds": 1},
                "privacy": {"mask_dead_letter": True, "route_local_at": None},
                "models": {
                    "chain": ["remote", "local"],
                    "backends": {"remote": {"kind": "openai", "base_url": srv.base_url, "model": "test-model", "timeout_s": 5.0}, "local": {"kind": "local"}},
                    "pricing": {"test-model": {"input_per_mtok": 0.1, "output_per_mtok": 0.1}},
                    "cache": {"enabled": False},
                },
            },
        )
        log_file = tmp_path / "flow.log"
        run_logged(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "rec"), tmp_path / "rec", log_file)
        bodies = list(srv.bodies)

    assert bodies, "no request reached the model server"
    outputs = output_texts(tmp_path / "out", log_file, kafka_bootstrap, {name: t for name, t in names.items() if name != "input_topic"})
    outputs["model request bodies"] = "\n".join(b.decode("utf-8", "replace") for b in bodies)
    assert outputs["topic output_topic"] and outputs["topic dead_letter_topic"]
    for where, text in outputs.items():
        leaked = find_canaries(text, canaries)
        assert leaked == [], f"{len(leaked)} canaries found in {where}: {sorted({(c.kind, c.disguise) for c in leaked})[:10]}"
