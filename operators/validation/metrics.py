"""Prometheus metrics of the validation stage, defined once.

Labels are low-cardinality: ``dataset`` (from ``validation.dataset``), ``stage``
(decode/schema/quality/business), ``rule`` (a configured rule name or a fixed schema
code) and ``outcome``.  Never an id, a value or any user text.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECORDS = Counter(
    "driftline_validation_records_total",
    "Records judged by the validation stage, by outcome (valid, warned, refused).",
    ["dataset", "outcome"],
)
REFUSALS = Counter(
    "driftline_validation_refusals_total",
    "Refusal reasons by stage and rule (one record may carry several).",
    ["dataset", "stage", "rule"],
)
WARNINGS = Counter(
    "driftline_validation_warnings_total",
    "Record-level warnings attached by warn-severity rules.",
    ["dataset", "rule"],
)
BATCH_BREACHES = Counter(
    "driftline_validation_batch_breaches_total",
    "Batch-level quality breaches (e.g. max_null_share exceeded); records are still judged one by one.",
    ["dataset", "rule"],
)
BATCH_SECONDS = Histogram(
    "driftline_validation_batch_seconds",
    "Time to validate one micro-batch.",
    ["dataset"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
