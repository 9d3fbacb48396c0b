"""Prometheus metrics of the output guardrails (labels: decision, tier, check and entity
names from the configuration and the recognizer registry; never an id or a value)."""

from __future__ import annotations

from prometheus_client import Counter

DECISIONS = Counter("driftline_guardrail_decisions_total", "Answers by guardrail decision and the tier that gave them.", ["decision", "tier"])
FINDINGS = Counter("driftline_guardrail_findings_total", "Guardrail checks that fired on stored answers (output_pii:<TYPE>, risk:<category>, rule:<name>, statistical:<check>).", ["check"])
OUTPUT_PII = Counter("driftline_output_pii_entities_total", "PII entities and secrets masked in model answers, by type.", ["entity"])
FALL_THROUGHS = Counter("driftline_guardrail_fallthroughs_total", "Answers rejected inside the model stage and retried on the next tier.", ["tier"])
