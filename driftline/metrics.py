"""Pipeline-level Prometheus metrics, defined once.

Stage-specific metrics live next to their stage (``driftline.models.metrics``,
``driftline.operators.validation.metrics``, ``driftline.sinks.parquet.metrics``) and
register on the same default registry.  Labels are low-cardinality: flow, step,
stage, reason code, dataset; never an id, a tenant-supplied value or PII.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

EVENTS_IN = Counter("driftline_events_in_total", "Raw messages read from Kafka.", ["flow"])
EVENTS_REJECTED = Counter("driftline_events_rejected_total", "Records refused, by stage and reason code.", ["flow", "stage", "reason"])
EVENTS_OUT = Counter("driftline_events_out_total", "Records that passed every stage.", ["flow"])
STEP_SECONDS = Histogram(
    "driftline_step_seconds",
    "Processing time of one micro-batch in a step.",
    ["flow", "step"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on ``addr:port`` (a background thread)."""
    start_http_server(port, addr=addr)
