"""Pipeline-level Prometheus metrics, defined once, and the endpoint that serves them.

Stage-specific metrics live next to their stage (``driftline.models.metrics``,
``driftline.operators.validation.metrics``, ``driftline.sinks.parquet.metrics``) and
register on the same default registry.  This module holds the pipeline's own: events
in, refused and out, PII found by type, Kafka consumer lag, the window KPIs (gauges of
the latest closed window of each key), active alerts, budgets, build info and the
OpenTelemetry GenAI client metrics under their Prometheus names.

Labels stay bounded: flow, stage, reason code, entity type, rule, severity (fixed or
configured sets), and key dimensions (``source``, ``model``, a budget's tenant...) whose
distinct values are capped per process by ``monitoring.metrics.label_value_limit`` (an
overflow value :data:`OVERFLOW` past it).  Never an id, a tenant-supplied text or PII.
Every name carries its unit (``_seconds``, ``_usd``, ``_ratio``, ``_tokens``...).

>>> import polars as pl
>>> observe_rejected("doc", pl.DataFrame({"stage": ["decode", "decode"], "reason_codes": [["bad_json"], ["bad_json"]]}))
2
>>> caps = LabelCaps(default=2)
>>> [caps.value("source", s) for s in ("a", "b", "c", "a")]
['a', 'b', '__other__', 'a']
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import polars as pl
import prometheus_client
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from driftline.heap import c_heap

prometheus_client.disable_created_metrics()  # no <counter>_created series: one series per counter, not two

OVERFLOW = "__other__"
"""Label value standing for every value of a dimension past its cap."""


class LabelCaps:
    """Distinct label values per dimension: the first ``limit`` values seen are kept, later
    ones become :data:`OVERFLOW` (thread-safe; a value once admitted stays admitted)."""

    def __init__(self, default: int = 100, limits: Mapping[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(default, limits)

    def configure(self, default: int, limits: Mapping[str, int] | None = None) -> None:
        """Set the limits; values admitted so far stay admitted unless the limits change."""
        with self._lock:
            limits = dict(limits or {})
            if getattr(self, "default", None) == default and getattr(self, "limits", None) == limits:
                return
            self.default = default
            self.limits = limits
            self._seen: dict[str, set[str]] = {}

    def limit(self, dim: str) -> int:
        return self.limits.get(dim, self.default)

    def value(self, dim: str, value: Any) -> str:
        """``value`` as a label value of dimension ``dim``, or :data:`OVERFLOW` past its cap."""
        v = "" if value is None else str(value)
        seen = self._seen.get(dim)
        if seen is not None and v in seen:  # the common case, without the lock
            return v
        with self._lock:
            seen = self._seen.setdefault(dim, set())
            if v in seen:
                return v
            if len(seen) < self.limit(dim):
                seen.add(v)
                return v
            return OVERFLOW


CAPS = LabelCaps()
"""The process's label caps (``monitoring.metrics``, set by :func:`configure`)."""

# ----------------------------------------------------------------------------- counters
EVENTS_IN = Counter("driftline_events_in_total", "Raw messages read from Kafka.", ["flow"])
EVENTS_REJECTED = Counter("driftline_events_rejected_total", "Records refused, by stage and first reason code.", ["flow", "stage", "reason"])
EVENTS_OUT = Counter("driftline_events_out_total", "Records that passed every stage and were scored.", ["flow"])
PII_ENTITIES = Counter("driftline_pii_entities_total", "PII entities found (and masked), by entity type.", ["flow", "type"])
CONSUMER_LAG = Gauge(
    "driftline_kafka_consumer_lag_messages",
    "Messages in an input partition after the flow's position (high watermark minus the next offset to read); 0 when drained.",
    ["topic", "partition"],
)
ACTIVE_ALERTS = Gauge("driftline_active_alerts", "Alerts of driftline's own rules firing now, by rule and severity (keys counted once each).", ["rule", "severity"])
BUILD_INFO = Info("driftline_build", "Versions of driftline and of the engines it runs on.")

# OpenTelemetry GenAI semantic conventions (gen_ai.client.*), under the names the
# OpenTelemetry-to-Prometheus translation gives them, with their required attributes
# (dots become underscores) and their recommended bucket boundaries.
GENAI_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "OpenTelemetry gen_ai.client.token.usage (unit {token}): tokens of one GenAI operation, by token type.",
    ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_token_type", "gen_ai_request_model"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
GENAI_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "OpenTelemetry gen_ai.client.operation.duration: duration of one GenAI operation (error_type set when it failed).",
    ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"],
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)


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
        EVENTS_REJECTED.labels(flow=flow, stage=stage or "unknown", reason=CAPS.value("reason", reason)).inc(n)
    return rejected.height


def observe_pii(flow: str, counts: Mapping[str, int]) -> None:
    """Add PII entity counts (entity type -> entities found) of one micro-batch."""
    for kind, n in counts.items():
        if n:
            PII_ENTITIES.labels(flow=flow, type=kind.lower()).inc(n)


def pii_counts(frame: pl.DataFrame, entities: Iterable[str]) -> dict[str, int]:
    """Entities found per type in a masked frame's ``pii_<type>`` columns (one pass).

    >>> pii_counts(pl.DataFrame({"pii_email": [1, 0, 2], "pii_phone": [None, 1, 0]}), ["EMAIL", "PHONE", "IBAN"])
    {'EMAIL': 3, 'PHONE': 1}
    """
    cols = {e: f"pii_{e.lower()}" for e in entities}
    present = {e: c for e, c in cols.items() if c in frame.columns}
    if not present or frame.height == 0:
        return {}
    sums = frame.select(pl.col(c).sum().alias(e) for e, c in present.items()).row(0, named=True)
    return {e: int(v) for e, v in sums.items() if v}


def observe_genai(operation: str, provider: str, model: str, seconds: float | None, error_type: str | None, input_tokens: int, output_tokens: int) -> None:
    """One GenAI client operation (a request to a provider): its duration and billed tokens."""
    model = CAPS.value("model", model)
    if seconds is not None:
        GENAI_DURATION.labels(operation, provider, model, error_type or "").observe(seconds)
    if input_tokens or output_tokens:
        GENAI_TOKEN_USAGE.labels(operation, provider, "input", model).observe(input_tokens)
        GENAI_TOKEN_USAGE.labels(operation, provider, "output", model).observe(output_tokens)


def observe_many(child: Any, values: Any) -> None:
    """Observe every value of ``values`` (an array) in the histogram ``child`` at once: the bucket
    counts come from one ``searchsorted`` instead of one ``observe`` call per value.

    >>> import numpy as np
    >>> h = Histogram("doc_seconds", "doc", buckets=(1, 2), registry=None); observe_many(h, np.array([0.5, 1.5, 9.0]))
    >>> [s.value for s in h.collect()[0].samples if s.name.endswith("_bucket")], h._sum.get()
    ([1.0, 2.0, 3.0], 11.0)
    """
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return
    bounds = getattr(child, "_upper_bounds", None)
    if bounds is None:  # not prometheus_client's histogram layout: one call per value
        for v in arr.tolist():
            child.observe(v)
        return
    counts = np.bincount(np.searchsorted(np.asarray(bounds), arr, side="left"), minlength=len(bounds))
    for bucket, n in zip(child._buckets, counts.tolist()):
        if n:
            bucket.inc(n)
    child._sum.inc(float(arr.sum()))


TELEMETRY_BACKEND = "telemetry"
"""``backend`` label of model calls the monitor flow learns from telemetry (made by other services)."""


def observe_model_calls(flow: str, rows: pl.DataFrame, *, provider: str = "unknown", operation: str = "chat") -> None:
    """Model metrics of calls reported as rows (the monitor flow's telemetry): the same
    ``driftline_model_*`` families the model stage records (``backend="telemetry"``, the
    model label capped) and the GenAI client metrics, in one group-by per micro-batch.

    Columns read: ``model_name``, ``model_error_class``, ``model_latency_ms``,
    ``model_input_tokens``, ``model_output_tokens``, ``model_cost_usd`` (when present).
    """
    if rows.height == 0:
        return
    from driftline.models import metrics as mm

    cost = pl.col("model_cost_usd") if "model_cost_usd" in rows.columns else pl.lit(0.0)
    groups = rows.group_by(pl.col("model_name").fill_null("unknown"), pl.col("model_error_class")).agg(
        pl.len().alias("n"),
        pl.col("model_input_tokens").fill_null(0).sum().alias("inp"),
        pl.col("model_output_tokens").fill_null(0).sum().alias("out"),
        cost.fill_null(0.0).sum().alias("cost"),
        (pl.col("model_latency_ms") / 1000.0).alias("seconds"),
        pl.col("model_input_tokens").fill_null(0).alias("inp_each"),
        pl.col("model_output_tokens").fill_null(0).alias("out_each"),
    )
    for model_name, error, n, inp, out, usd, seconds, inp_each, out_each in groups.iter_rows():
        model = CAPS.value("model", model_name)
        lbl = {"backend": TELEMETRY_BACKEND, "model": model, "tier": TELEMETRY_BACKEND}
        mm.CALLS.labels(**lbl, outcome="success" if error is None else "error").inc(n)
        if error is not None:
            mm.ERRORS.labels(**lbl, error_class=CAPS.value("error_class", error)).inc(n)
        if inp or out:
            mm.TOKENS.labels(**lbl, kind="input").inc(inp)
            mm.TOKENS.labels(**lbl, kind="output").inc(out)
            observe_many(GENAI_TOKEN_USAGE.labels(operation, provider, "input", model), inp_each)
            observe_many(GENAI_TOKEN_USAGE.labels(operation, provider, "output", model), out_each)
        if usd:
            mm.COST.labels(**lbl).inc(usd)
        observe_many(mm.LATENCY.labels(**lbl), seconds)
        observe_many(GENAI_DURATION.labels(operation, provider, model, "" if error is None else CAPS.value("error_class", error)), seconds)


def set_build_info() -> None:
    from importlib.metadata import PackageNotFoundError, version

    from driftline import __version__

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    BUILD_INFO.info({"version": __version__, "python": platform.python_version(), "bytewax": ver("bytewax"), "polars": ver("polars"), "confluent_kafka": ver("confluent-kafka")})


# ----------------------------------------------------------------------------- window KPIs
@dataclass(frozen=True, slots=True)
class WindowGauge:
    """One exported window KPI: a gauge fed by metrics-row columns (one sample per ``variants`` entry).

    ``merge`` says how rows sharing a label set in the same window combine (only keys
    folded into the overflow value do): ``sum`` for amounts, ``max``/``min`` keep the worst.
    """

    name: str
    help: str
    variants: tuple[tuple[str, str, float], ...]  # (extra label value, column, scale)
    extra_label: str | None = None
    merge: str = "max"


WINDOW_GAUGES: tuple[WindowGauge, ...] = (
    WindowGauge("driftline_window_events", "Events in the latest closed window of the key.", (("", "events", 1.0),), merge="sum"),
    WindowGauge("driftline_window_model_calls", "Model calls in the latest closed window of the key.", (("", "model_calls", 1.0),), merge="sum"),
    WindowGauge("driftline_window_error_ratio", "Share of the window's model calls that failed (0-1).", (("", "error_rate", 1.0),)),
    WindowGauge(
        "driftline_window_latency_seconds",
        "Model call latency percentiles of the window (quantile 0.5, 0.95, 0.99).",
        (("0.5", "latency_p50_ms", 1e-3), ("0.95", "latency_p95_ms", 1e-3), ("0.99", "latency_p99_ms", 1e-3)),
        extra_label="quantile",
    ),
    WindowGauge("driftline_window_cost_usd", "Cost of the window's model calls in US dollars.", (("", "cost_usd", 1.0),), merge="sum"),
    WindowGauge("driftline_window_cost_per_request_usd", "Average cost of one model call in the window, US dollars.", (("", "cost_per_request_usd", 1.0),)),
    WindowGauge(
        "driftline_window_tokens", "Tokens billed in the window, by kind (input, output).", (("input", "input_tokens", 1.0), ("output", "output_tokens", 1.0)), extra_label="kind", merge="sum"
    ),
    WindowGauge("driftline_window_cache_hit_ratio", "Share of the window's model calls answered by the response cache (0-1).", (("", "cache_hit_rate", 1.0),), merge="min"),
    WindowGauge("driftline_window_fallback_ratio", "Share of the window's answers given by a tier other than the chain's first (0-1).", (("", "fallback_share", 1.0),)),
    WindowGauge("driftline_window_confidence_mean_ratio", "Mean model confidence of the window (0-1).", (("", "confidence_mean", 1.0),), merge="min"),
    WindowGauge(
        "driftline_window_confidence_drift_ratio",
        "Relative change of mean confidence against the drift reference (levels: 0.05 minor, 0.10 moderate, 0.15 significant).",
        (("", "confidence_drift_rel", 1.0),),
    ),
    WindowGauge(
        "driftline_window_drift_max_score",
        "Largest drift statistic over the monitored features of the window (statistic psi, ks, js).",
        (("psi", "psi_max", 1.0), ("ks", "ks_max", 1.0), ("js", "js_max", 1.0)),
        extra_label="statistic",
    ),
    WindowGauge("driftline_window_budget_exhausted_calls", "Model calls of the window refused because a budget was exhausted.", (("", "budget_exhausted_calls", 1.0),), merge="sum"),
    WindowGauge("driftline_window_end_timestamp_seconds", "End of the latest closed window of the key (event time, Unix seconds).", (("", "window_end", 1.0),)),
)
FEATURE_DRIFT = "driftline_window_feature_drift_score"
FEATURE_STATISTICS = ("psi", "ks", "js")


@dataclass(slots=True)
class _WindowEntry:
    window_end: float
    values: dict[tuple[str, str], float] = field(default_factory=dict)  # (gauge, extra label value) -> value
    features: dict[tuple[str, str], float] = field(default_factory=dict)  # (feature, statistic) -> value
    updated: float = 0.0


def _merge(kind: str, a: float, b: float) -> float:
    return a + b if kind == "sum" else max(a, b) if kind == "max" else min(a, b)


class WindowKpis(Collector):
    """Gauges of the latest closed window of every key, per flow (a custom collector:
    samples are built at scrape time from the rows kept here, one per label set).

    Labels: ``flow``, the key dimensions (``monitoring.key_dims``, values capped), and the
    gauge's own (``quantile``, ``kind``, ``statistic``, ``feature``).  A null statistic
    (no model calls, drift warming up) exports no sample: unknown, not zero.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, tuple[str, ...]], _WindowEntry] = {}
        self._dims: tuple[str, ...] = ()
        self._merges = {g.name: g.merge for g in WINDOW_GAUGES}
        self._columns = {v[1] for g in WINDOW_GAUGES for v in g.variants} | {"drift"}
        self.ttl = 900.0
        self.clock = clock

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def observe(self, flow: str, rows: pl.DataFrame, key_dims: Sequence[str]) -> None:
        """Keep the metrics rows of closed windows (a frame of ``metrics_schema`` rows)."""
        if rows.height == 0:
            return
        dims = tuple(key_dims)
        now = self.clock()
        frame = rows.select([c for c in rows.columns if c in self._columns or c in dims])
        with self._lock:
            if dims != self._dims:  # another configuration in this process: start over
                self._entries.clear()
                self._dims = dims
            for row in frame.iter_rows(named=True):
                end = row["window_end"].timestamp()
                values: dict[tuple[str, str], float] = {}
                for g in WINDOW_GAUGES:
                    for extra, col, scale in g.variants:
                        v = end if col == "window_end" else row.get(col)
                        if v is not None and not math.isnan(v):
                            values[(g.name, extra)] = float(v) * scale
                features: dict[tuple[str, str], float] = {}
                for entry in row.get("drift") or ():
                    for stat in FEATURE_STATISTICS:
                        v = entry.get(stat)
                        if v is not None and not math.isnan(v):
                            features[(CAPS.value("feature", entry.get("feature")), stat)] = float(v)
                key = (flow, tuple(CAPS.value(d, row.get(d)) for d in dims))
                have = self._entries.get(key)
                if have is None or end > have.window_end:
                    self._entries[key] = _WindowEntry(end, values, features, now)
                elif end == have.window_end:  # several keys folded into one label set (the overflow value)
                    for k, v in values.items():
                        have.values[k] = _merge(self._merges[k[0]], have.values[k], v) if k in have.values else v
                    for k, v in features.items():
                        have.features[k] = max(have.features.get(k, v), v)
                    have.updated = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        with self._lock:
            for key in [k for k, e in self._entries.items() if now - e.updated > self.ttl]:
                del self._entries[key]
            entries = list(self._entries.items())
            dims = list(self._dims)
        for g in WINDOW_GAUGES:
            fam = GaugeMetricFamily(g.name, g.help, labels=["flow", *dims, *([g.extra_label] if g.extra_label else [])])
            for (flow, labels), e in entries:
                for extra, _col, _scale in g.variants:
                    v = e.values.get((g.name, extra))
                    if v is not None:
                        fam.add_metric([flow, *labels, *([extra] if g.extra_label else [])], v)
            yield fam
        fam = GaugeMetricFamily(FEATURE_DRIFT, "Drift statistic of each monitored feature in the window (statistic psi, ks, js).", labels=["flow", *dims, "feature", "statistic"])
        for (flow, labels), e in entries:
            for (feature, stat), v in sorted(e.features.items()):
                fam.add_metric([flow, *labels, feature, stat], v)
        yield fam

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # label names follow the configured key dimensions: nothing to check at registration


WINDOWS = WindowKpis()
REGISTRY.register(WINDOWS)


def observe_windows(flow: str, key_dims: Sequence[str]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A map step's function exporting closed windows' metrics rows as gauges; returns the frame."""

    def export(rows: pl.DataFrame) -> pl.DataFrame:
        WINDOWS.observe(flow, rows, key_dims)
        return rows

    return export


# ----------------------------------------------------------------------------- budgets
class BudgetCollector(Collector):
    """``driftline_budget_remaining_usd`` and ``..._spent_usd`` of today's budgets, read at scrape time
    from the budget trackers registered with :meth:`watch` (anything with ``limit(scope, key)``,
    ``spent`` and ``config``, i.e. :class:`driftline.models.budget.BudgetTracker`)."""

    def __init__(self) -> None:
        self._trackers: list[Any] = []
        self._lock = threading.Lock()

    def watch(self, tracker: Any) -> None:
        with self._lock:
            self._trackers = [t for t in self._trackers if t is not tracker] + [tracker]

    def clear(self) -> None:
        with self._lock:
            self._trackers = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        remaining = GaugeMetricFamily("driftline_budget_remaining_usd", "What today's budget (UTC day) still allows, US dollars, by scope (tenant, source) and name.", labels=["scope", "name"])
        spent_f = GaugeMetricFamily("driftline_budget_spent_usd", "Settled spend of today against a budget, US dollars, by scope and name.", labels=["scope", "name"])
        with self._lock:
            trackers = list(self._trackers)
        rem: dict[tuple[str, str], float] = {}
        spent_by: dict[tuple[str, str], float] = {}
        for t in trackers:
            c = t.config
            spent = {(scope, key): usd for (_day, scope, key), usd in t.spent.items()}
            names = {("tenant", k) for k in c.per_tenant_daily_usd} | {("source", k) for k in c.per_source_daily_usd} | set(spent)
            for scope, key in names:
                limit = t.limit(scope, key)
                if limit is None:
                    continue
                label = (scope, CAPS.value(scope, key))
                used = spent.get((scope, key), 0.0)
                left = max(limit - used, 0.0)
                rem[label] = min(rem.get(label, left), left)  # folded names: the tightest
                spent_by[label] = spent_by.get(label, 0.0) + used
        for (scope, name), v in sorted(rem.items()):
            remaining.add_metric([scope, name], v)
            spent_f.add_metric([scope, name], spent_by[(scope, name)])
        yield remaining
        yield spent_f

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


BUDGETS = BudgetCollector()
REGISTRY.register(BUDGETS)


def watch_budgets(tracker: Any) -> None:
    """Export ``tracker``'s budgets (a :class:`driftline.models.budget.BudgetTracker`)."""
    BUDGETS.watch(tracker)


# ----------------------------------------------------------------------------- health and the endpoint
class Health:
    """Liveness and readiness of the flow in this process.

    The Kafka source calls :meth:`polled` after every poll.  Ready: the input was polled
    at least once and the flow has not finished.  Live: the input was polled within
    ``stall_seconds`` (or the process started less than that ago): a worker stuck in a
    step stops polling, so its probe fails and an orchestrator restarts it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.stall_seconds = 300.0
        self.reset()

    def reset(self) -> None:
        self.started = self.clock()
        self.last_poll: float | None = None
        self.finished = False

    def polled(self) -> None:
        self.last_poll = self.clock()

    def finish(self) -> None:
        self.finished = True

    def live(self) -> tuple[bool, str]:
        now = self.clock()
        since = now - (self.last_poll if self.last_poll is not None else self.started)
        if since > self.stall_seconds:
            return False, f"input not polled for {since:.0f} s (stall_seconds {self.stall_seconds:g})"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.finished:
            return False, "flow finished"
        if self.last_poll is None:
            return False, "input not polled yet"
        return self.live()


HEALTH = Health()


def configure(cfg: Any) -> None:
    """Apply ``monitoring.metrics`` (a :class:`~driftline.config.monitoring.MetricsConfig`): label caps,
    window series lifetime, stall limit; also sets the build info.  Called by the flow builders."""
    CAPS.configure(cfg.label_value_limit, cfg.label_value_limits)
    WINDOWS.ttl = cfg.window_series_ttl_seconds
    HEALTH.stall_seconds = cfg.stall_seconds
    set_build_info()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


def metrics_app(registry: Any = REGISTRY, health: Health = HEALTH) -> Callable[..., Any]:
    """WSGI app: ``/metrics`` (Prometheus text format), ``/healthz`` (liveness), ``/readyz`` (readiness)."""
    prom = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            ok, why = (health.live if path == "/healthz" else health.ready)()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [(why + "\n").encode()]
        if path not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: /metrics, /healthz, /readyz\n"]
        return prom(environ, start_response)  # type: ignore[no-any-return]

    return app


def parse_addr(addr: str, port: int | None = None) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or ``:port`` -> (host, port); ``port`` fills a missing one.

    >>> parse_addr("0.0.0.0:9108"), parse_addr("[::]:9108"), parse_addr("127.0.0.1", 9109), parse_addr(":9110")
    (('0.0.0.0', 9108), ('::', 9108), ('127.0.0.1', 9109), ('0.0.0.0', 9110))
    """
    host, tail = addr, ""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"metrics address {addr!r}: expected [host]:port")
        tail = rest[1:]
    elif addr.count(":") == 1:
        host, tail = addr.split(":")
        host = host or "0.0.0.0"
    if tail:
        if not tail.isdigit():
            raise ValueError(f"metrics address {addr!r}: the port after ':' must be a number")
        return host, int(tail)
    if port is None:
        raise ValueError(f"metrics address {addr!r} has no port; give host:port or --metrics-port")
    return host, port


def serve_metrics(port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``addr:port`` (a daemon thread); returns the server."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]

    class Server(_Server):
        address_family = family

    httpd = make_server(addr, port, metrics_app(), Server, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, name="driftline-metrics", daemon=True).start()
    return httpd


# ----------------------------------------------------------------------------- step timers
#
# Switched on by the environment variable DRIFTLINE_STEP_TIMERS=<path of a JSON file>.
# The flows wrap every step function with :func:`timed` (a no-op that returns the function
# itself when timers are off, so the normal path costs nothing); the totals, the number of
# input events, the first-batch time and the process's RSS are written to the file about
# once a second and at exit.  bench/bench_e2e.py reads it for its per-step table.

TIMERS_ENV = "DRIFTLINE_STEP_TIMERS"


#: The name prefix of the threads that run a worker's stages ahead of it (operators/ahead.py);
#: the step timers list the steps timed on them apart (their time overlaps the worker's).
HELPER_THREAD_PREFIX = "driftline-stages"


class StepTimers:
    """Wall-clock seconds and calls per step id, plus input events, written as JSON to ``path``.

    >>> import tempfile, json
    >>> t = StepTimers(tempfile.mktemp())
    >>> double = t.wrap("double", lambda x: 2 * x)
    >>> t.count_in(3); double(21), t.calls["double"]
    (42, 1)
    >>> t.write(); sorted(json.load(open(t.path))["steps"])
    ['double']
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}
        #: CPU seconds of the calling thread (time.thread_time): without the waits for the
        #: interpreter lock held by another thread, and without Polars' pool threads' work
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        #: steps that ran on a helper thread (operators/ahead.py): their time overlaps the worker's steps
        self.helper: set[str] = set()
        self._write_lock = threading.Lock()  # the worker and its helper thread both write
        self.events_in = 0
        self.first_event_at: float | None = None  # time.time() of the first rows this process saw (a poll or a step's input)
        self.first_event_cpu: float | None = None  # this process's CPU seconds then
        self.started_at = time.time()
        self._last_write = 0.0
        self._peak_rss = 0

    def wrap(self, step_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds.setdefault(step_id, 0.0)
        self.cpu.setdefault(step_id, 0.0)
        self.calls.setdefault(step_id, 0)

        def timed_step(*args: Any, **kwargs: Any) -> Any:
            if self.first_event_at is None and args and _has_rows(args[0]):
                self._begin()  # a process that decodes nothing still works once rows reach it
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.first_event_at is not None:  # waiting for the first records is start-up, not cost
                    self.seconds[step_id] += time.perf_counter() - t0
                    self.cpu[step_id] += time.thread_time() - c0
                    self.calls[step_id] += 1
                    if step_id not in self.helper and threading.current_thread().name.startswith(HELPER_THREAD_PREFIX):
                        self.helper.add(step_id)
                if t0 - self._last_write > 1.0:
                    self.write()

        return timed_step

    def count_in(self, n: int) -> None:
        if n and self.first_event_at is None:
            self._begin()
        self.events_in += n

    def _begin(self) -> None:
        """The first rows reached this process: from here on its time is work, not start-up."""
        self.first_event_at = time.time()
        self.first_event_cpu = time.process_time()

    def write(self) -> None:
        with self._write_lock:
            self._write()

    def _write(self) -> None:
        self._last_write = time.perf_counter()
        rss, hwm = _rss_bytes()
        self._peak_rss = max(self._peak_rss, hwm)
        heap = c_heap()
        doc = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "first_event_at": self.first_event_at,
            "written_at": time.time(),
            "events_in": self.events_in,
            "cpu_s": time.process_time(),  # user + system seconds of this process (all threads)
            "first_event_cpu_s": self.first_event_cpu,
            "rss_bytes": rss,
            "peak_rss_bytes": self._peak_rss,
            "c_heap_bytes": heap[0] if heap else None,  # see driftline/heap.py's c_heap
            "c_heap_free_bytes": heap[1] if heap else None,
            "steps": {k: {"seconds": self.seconds[k], "cpu_seconds": self.cpu[k], "calls": self.calls[k], "helper": k in self.helper} for k in self.seconds},
        }
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.path)


def _has_rows(value: Any, depth: int = 0) -> bool:
    """Whether a step's input holds rows: a frame with rows, or a list (of frames, keyed
    items, Kafka batches) holding one; an idle tick (empty frames) holds none.

    >>> import polars as pl
    >>> _has_rows([("0", pl.DataFrame())]), _has_rows([("0", pl.DataFrame({"a": [1]}))]), _has_rows(7)
    (False, True, False)
    """
    height = getattr(value, "height", None)
    if isinstance(height, int):
        return height > 0
    if isinstance(value, list | tuple):
        return len(value) > 0 if depth >= 2 else any(_has_rows(v, depth + 1) for v in value)
    return False


def _rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process from /proc (0, 0 where unavailable)."""
    rss = hwm = 0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


_TIMERS: StepTimers | None = None


def step_timers() -> StepTimers | None:
    """The process's step timers when ``$DRIFTLINE_STEP_TIMERS`` is set, else None."""
    global _TIMERS
    path = os.environ.get(TIMERS_ENV)
    if not path:
        return None
    if _TIMERS is None or _TIMERS.path != path:
        _TIMERS = StepTimers(path)
        atexit.register(_TIMERS.write)
    return _TIMERS


def count_input(n: int) -> None:
    """Count ``n`` input events for the step timers (nothing when they are off)."""
    timers = step_timers()
    if timers is not None:
        timers.count_in(n)


def timed(step_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` timed under ``step_id`` when step timers are on; ``fn`` itself otherwise."""
    timers = step_timers()
    return fn if timers is None else timers.wrap(step_id, fn)


def timed_sink(step_id: str, sink: Any) -> Any:
    """Time the ``write_batch`` (and ``snapshot``) calls of every partition ``sink`` builds (when timers are on)."""
    if step_timers() is None:
        return sink
    return wrap_sink(sink, lambda write: timed(step_id, write), snapshot=lambda snap: timed(step_id, snap))


def wrap_sink(sink: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]], *, snapshot: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None) -> Any:
    """Wrap the ``write_batch`` method of every partition ``sink`` builds with ``wrap``
    (and, given ``snapshot``, a stateful partition's ``snapshot``: its epoch-end work,
    such as a transaction's commit).

    Works for dynamic (``build``) and fixed-partitioned (``build_part``) sinks by wrapping
    the built partition's method on the instance; the sink's class is unchanged, so
    Bytewax sees the same sink.  Step timers and tracing (:mod:`driftline.tracing`) use it.
    """
    for name in ("build", "build_part"):
        builder = getattr(sink, name, None)
        if builder is None:
            continue

        def build(*args: Any, _builder: Callable[..., Any] = builder, **kwargs: Any) -> Any:
            part = _builder(*args, **kwargs)
            part.write_batch = wrap(part.write_batch)
            if snapshot is not None and hasattr(part, "snapshot"):
                part.snapshot = snapshot(part.snapshot)
            return part

        setattr(sink, name, build)
    return sink


def timed_logic(step_id: str, builder: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Time the callbacks (``on_batch``, ``on_notify``, ``on_eof``) of the stateful logic
    ``builder`` makes (when timers are on); ``builder`` itself otherwise."""
    if step_timers() is None:
        return builder
    return wrap_logic(builder, lambda cb: timed(step_id, cb))


def wrap_logic(builder: Callable[[Any], Any], wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[[Any], Any]:
    """A builder whose logic objects have ``on_batch``, ``on_notify`` and ``on_eof`` wrapped with ``wrap``."""

    def build(state: Any) -> Any:
        logic = builder(state)
        for name in ("on_batch", "on_notify", "on_eof"):
            setattr(logic, name, wrap(getattr(logic, name)))
        return logic

    return build
