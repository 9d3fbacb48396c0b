"""Pipeline-level Prometheus metrics, defined once.

Stage-specific metrics live next to their stage (``driftline.models.metrics``,
``driftline.operators.validation.metrics``, ``driftline.sinks.parquet.metrics``) and
register on the same default registry.  Labels are low-cardinality: flow, stage, reason
code (from a fixed or configured set); never an id, a tenant-supplied value or PII.

>>> import polars as pl
>>> observe_rejected("doc", pl.DataFrame({"stage": ["decode", "decode"], "reason_codes": [["bad_json"], ["bad_json"]]}))
2
"""

from __future__ import annotations

import polars as pl
from prometheus_client import Counter, start_http_server

EVENTS_IN = Counter("driftline_events_in_total", "Raw messages read from Kafka.", ["flow"])
EVENTS_REJECTED = Counter("driftline_events_rejected_total", "Records refused, by stage and first reason code.", ["flow", "stage", "reason"])
EVENTS_OUT = Counter("driftline_events_out_total", "Records that passed every stage and were scored.", ["flow"])


def observe_in(flow: str, count: int) -> None:
    EVENTS_IN.labels(flow=flow).inc(count)


def observe_out(flow: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Count scored rows; returns the frame so it can sit in an ``op.map``."""
    if frame.height:
        EVENTS_OUT.labels(flow=flow).inc(frame.height)
    return frame


def observe_rejected(flow: str, rejected: pl.DataFrame) -> int:
    """Count refused rows by stage and first reason code (one vectorized group-by)."""
    if rejected.height == 0:
        return 0
    counts = rejected.group_by(pl.col("stage"), pl.col("reason_codes").list.first().fill_null("unknown").alias("reason")).len()
    for stage, reason, n in counts.iter_rows():
        # reason codes are drawn from the decoder's and the configured rules' names; a
        # code's suffix after ':' (a field name) is kept, the code never holds data.
        EVENTS_REJECTED.labels(flow=flow, stage=stage or "unknown", reason=reason).inc(n)
    return rejected.height


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on ``addr:port`` (a background thread)."""
    start_http_server(port, addr=addr)
