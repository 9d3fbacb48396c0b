"""Output rows of the window aggregation: the published ``metrics`` and ``late`` schemas.

A metrics row is one window and key: its bounds, the key dimensions (one column each,
named like the dimension), the reference the drift columns were computed against, the
pipeline version, and every statistic.  Natural key: ``(window_start, key)``.

A late row counts events that arrived after their window was closed (beyond the
allowed lateness); the rows themselves still reach the enriched dataset.  Natural key:
``(window_start, key, first_id)``.

>>> from driftline.config.monitoring import MonitoringConfig
>>> schema = metrics_schema(MonitoringConfig())
>>> schema["latency_p95_ms"], list(schema)[:4]
(Float64, ['window_start', 'window_end', 'key', 'source'])
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl

from driftline import __version__
from driftline.config.monitoring import ALERTABLE_METRICS, MonitoringConfig
from driftline.operators.aggregate.accumulator import WindowAccumulator
from driftline.operators.aggregate.columns import window_columns
from driftline.operators.batch import TIME_DTYPE

KV_COUNT = pl.List(pl.Struct({"name": pl.Utf8, "count": pl.Int64}))
KV_SHARE = pl.List(pl.Struct({"name": pl.Utf8, "share": pl.Float64}))
DRIFT_DTYPE = pl.List(
    pl.Struct(
        {
            "feature": pl.Utf8,
            "kind": pl.Utf8,
            "n": pl.Int64,
            "method": pl.Utf8,
            "score": pl.Float64,
            "threshold": pl.Float64,
            "drifted": pl.Boolean,
            "psi": pl.Float64,
            "psi_level": pl.Utf8,
            "ks": pl.Float64,
            "wasserstein": pl.Float64,
            "js": pl.Float64,
            "exact": pl.Boolean,
            "ks_tolerance": pl.Float64,
        }
    )
)

_STATS: dict[str, pl.DataType] = {
    "events": pl.Int64,
    "model_calls": pl.Int64,
    "errors": pl.Int64,
    "error_rate": pl.Float64,
    "errors_by_class": KV_COUNT,
    "latency_p50_ms": pl.Float64,
    "latency_p95_ms": pl.Float64,
    "latency_p99_ms": pl.Float64,
    "latency_mean_ms": pl.Float64,
    "latency_exact": pl.Boolean,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "cost_usd": pl.Float64,
    "cost_per_request_usd": pl.Float64,
    "cache_hits": pl.Int64,
    "cache_hit_rate": pl.Float64,
    "cache_saved_usd": pl.Float64,
    "tier_shares": KV_SHARE,
    "fallback_share": pl.Float64,
    "confidence_mean": pl.Float64,
    "confidence_p10": pl.Float64,
    "label_counts": KV_COUNT,
    "pii_total": pl.Int64,
    "pii_events": pl.Int64,
    "injection_events": pl.Int64,
    "injection_rate": pl.Float64,
    "budget_exhausted_calls": pl.Int64,
    "first_event_time": TIME_DTYPE,
    "last_event_time": TIME_DTYPE,
    # filled by the drift stage (null while the reference warms up)
    "reference_id": pl.Utf8,
    "psi_max": pl.Float64,
    "ks_max": pl.Float64,
    "js_max": pl.Float64,
    "drifted_features": pl.Int64,
    "confidence_drift_rel": pl.Float64,
    "confidence_drift_level": pl.Utf8,
    "drift": DRIFT_DTYPE,
}


def metrics_schema(cfg: MonitoringConfig) -> dict[str, pl.DataType]:
    """Column names and types of the ``metrics`` dataset and topic rows (stable for a config)."""
    schema: dict[str, pl.DataType] = {"window_start": TIME_DTYPE, "window_end": TIME_DTYPE, "key": pl.Utf8}
    for dim in cfg.key_dims:
        schema[dim] = pl.Utf8
    schema["pipeline_version"] = pl.Utf8
    schema.update(_STATS)
    schema.update({c.name: c.dtype for c in window_columns().values()})
    missing = [m for m in ALERTABLE_METRICS if m not in schema]
    assert not missing, f"ALERTABLE_METRICS not in the metrics schema: {missing}"
    return schema


def late_schema(cfg: MonitoringConfig) -> dict[str, pl.DataType]:
    """Column names and types of the ``metrics_late`` rows."""
    schema: dict[str, pl.DataType] = {"window_start": TIME_DTYPE, "window_end": TIME_DTYPE, "key": pl.Utf8}
    for dim in cfg.key_dims:
        schema[dim] = pl.Utf8
    schema.update(
        {
            "first_id": pl.Utf8,
            "late_events": pl.Int64,
            "late_model_calls": pl.Int64,
            "late_errors": pl.Int64,
            "late_cost_usd": pl.Float64,
            "first_event_time": TIME_DTYPE,
            "last_event_time": TIME_DTYPE,
            "pipeline_version": pl.Utf8,
        }
    )
    return schema


def pipeline_version(cfg: MonitoringConfig) -> str:
    """``monitoring.pipeline_version`` or the installed driftline version."""
    return cfg.pipeline_version or __version__


def key_string(cfg: MonitoringConfig, key: tuple[str, ...]) -> str:
    """``source=reviews|model=m1``: the key as one low-cardinality string."""
    return "|".join(f"{d}={v}" for d, v in zip(cfg.key_dims, key))


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def metrics_row(acc: WindowAccumulator, start: datetime, end: datetime, key: tuple[str, ...], cfg: MonitoringConfig) -> dict[str, Any]:
    """The metrics row of one closed window and key (drift columns null)."""
    calls = acc.model_calls
    errors = acc.errors_total
    tier_total = acc.tiers.total
    primary = cfg.columns.primary_tier  # None: no first choice known (see ColumnsConfig.primary_tier), share unknown
    fallback = sum(c for t, c in acc.tiers.counts.items() if t != primary)
    q = acc.latency
    p50, p95, p99 = q.quantiles([0.50, 0.95, 0.99])
    row: dict[str, Any] = {"window_start": start, "window_end": end, "key": key_string(cfg, key)}
    row.update(dict(zip(cfg.key_dims, key)))
    row.update(
        {
            "pipeline_version": pipeline_version(cfg),
            "events": acc.events,
            "model_calls": calls,
            "errors": errors,
            "error_rate": _ratio(errors, calls),
            "errors_by_class": [{"name": k, "count": c} for k, c in sorted(acc.errors.counts.items())],
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "latency_p99_ms": p99,
            "latency_mean_ms": q.mean,
            "latency_exact": q.exact,
            "input_tokens": acc.input_tokens,
            "output_tokens": acc.output_tokens,
            "cost_usd": acc.cost_usd,
            "cost_per_request_usd": _ratio(acc.cost_usd, calls),
            "cache_hits": acc.cache_hits,
            "cache_hit_rate": _ratio(acc.cache_hits, calls),
            "cache_saved_usd": acc.cache_saved_usd,
            "tier_shares": [{"name": k, "share": v} for k, v in acc.tiers.shares().items()],
            "fallback_share": _ratio(fallback, tier_total) if primary is not None else None,
            "confidence_mean": acc.confidence.mean,
            "confidence_p10": acc.confidence.quantile(0.10),
            "label_counts": [{"name": k, "count": c} for k, c in sorted(acc.labels.counts.items())],
            "pii_total": acc.pii_total,
            "pii_events": acc.pii_events,
            "injection_events": acc.injection_events,
            "injection_rate": _ratio(acc.injection_events, acc.events),
            "budget_exhausted_calls": acc.budget_exhausted_calls,
            "first_event_time": acc.first_event_time,
            "last_event_time": acc.last_event_time,
            "reference_id": None,
            "psi_max": None,
            "ks_max": None,
            "js_max": None,
            "drifted_features": None,
            "confidence_drift_rel": None,
            "confidence_drift_level": None,
            "drift": [],
        }
    )
    for col in window_columns().values():
        row[col.name] = col.value(acc.sums, acc.events)
    return row


def late_row(acc: WindowAccumulator, start: datetime, end: datetime, key: tuple[str, ...], first_id: str | None, cfg: MonitoringConfig) -> dict[str, Any]:
    """One late slice counted against the window it belongs to."""
    row: dict[str, Any] = {"window_start": start, "window_end": end, "key": key_string(cfg, key)}
    row.update(dict(zip(cfg.key_dims, key)))
    row.update(
        {
            "first_id": first_id,
            "late_events": acc.events,
            "late_model_calls": acc.model_calls,
            "late_errors": acc.errors_total,
            "late_cost_usd": acc.cost_usd,
            "first_event_time": acc.first_event_time,
            "last_event_time": acc.last_event_time,
            "pipeline_version": pipeline_version(cfg),
        }
    )
    return row


def rows_frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Rows as a DataFrame with exactly ``schema`` (missing keys are null)."""
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
