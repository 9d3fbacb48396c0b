"""Prometheus metrics of the models stage, defined once.

Labels are low-cardinality: backend kind, model name, tier name, outcome, error class,
token kind, budget scope.  Never an event id, a tenant or any text.  The ``model`` and
``error_class`` values are capped per process (``monitoring.metrics.label_value_limit``,
:data:`driftline.metrics.CAPS`): the monitor flow records models named by telemetry.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from driftline.metrics import CAPS

M = TypeVar("M", Counter, Gauge, Histogram)


class Capped(Generic[M]):
    """``metric`` whose data-driven label values (``model``, ``error_class``) pass through the label caps."""

    CAPPED = ("model", "error_class")

    def __init__(self, metric: M) -> None:
        self.metric = metric

    def labels(self, **labels: str) -> Any:
        for k in self.CAPPED:
            if k in labels:
                labels[k] = CAPS.value(k, labels[k])
        return self.metric.labels(**labels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.metric, name)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

CALLS = Capped(Counter(
    "driftline_model_calls_total",
    "Requests handled per tier, by outcome (success, error, cached, replayed, skipped).",
    ["backend", "model", "tier", "outcome"],
))
ERRORS = Capped(Counter(
    "driftline_model_errors_total",
    "Failed requests per tier by error class (after retries).",
    ["backend", "model", "tier", "error_class"],
))
RETRIES = Capped(Counter(
    "driftline_model_retries_total",
    "Retries of remote requests by the error class that caused them.",
    ["backend", "model", "tier", "error_class"],
))
LATENCY = Capped(Histogram(
    "driftline_model_call_latency_seconds",
    "Latency of one request to a tier, retries included.",
    ["backend", "model", "tier"],
    buckets=LATENCY_BUCKETS,
))
TOKENS = Capped(Counter(
    "driftline_model_tokens_total",
    "Tokens billed, by kind (input, output, cached, reasoning).",
    ["backend", "model", "tier", "kind"],
))
COST = Capped(Counter(
    "driftline_model_cost_usd_total",
    "Cost in US dollars of model calls.",
    ["backend", "model", "tier"],
))
COST_SAVED = Capped(Counter(
    "driftline_model_cost_saved_usd_total",
    "Cost avoided by response-cache hits.",
    ["backend", "model", "tier"],
))
CIRCUIT_STATE = Capped(Gauge(
    "driftline_model_circuit_state",
    "Circuit breaker state per tier: 0 closed, 1 half-open, 2 open.",
    ["backend", "model", "tier"],
))
FALLBACKS = Counter(
    "driftline_model_fallbacks_total",
    "Requests a tier passed on to the next, by reason (error class, privacy, budget).",
    ["tier", "reason"],
)
BUDGET_EVENTS = Counter(
    "driftline_model_budget_events_total",
    "Budget exhaustion events by scope (tenant or source).",
    ["scope"],
)
RATE_WAITS = Counter(
    "driftline_model_rate_limit_waits_total",
    "Requests that waited for room under a rate limit (or a Retry-After pause) before being sent, by the limit that made them wait.",
    ["tier", "limit"],
)
RATE_WAIT_SECONDS = Counter(
    "driftline_model_rate_limit_wait_seconds_total",
    "Time requests waited for room under a rate limit or a pause, by limit.",
    ["tier", "limit"],
)
RATE_THROTTLED = Counter(
    "driftline_model_throttled_requests_total",
    "Requests not sent because a rate limit had no room (tasks with on_rate_limit: next_tier), by limit.",
    ["tier", "limit"],
)
RATE_PAUSES = Counter(
    "driftline_model_rate_limit_pauses_total",
    "Pauses of a tier published after a 429 with Retry-After.",
    ["tier"],
)
ROUTES = Counter(
    "driftline_model_routes_total",
    "Rows routed, by the first tier of their route and the routing reason code.",
    ["tier", "reason"],
)
NEAR_DUPLICATES = Counter(
    "driftline_model_near_duplicate_lookups_total",
    "Near-duplicate cache lookups with a candidate above the threshold: hit, or refused by the negation/number guard.",
    ["tier", "outcome"],
)
