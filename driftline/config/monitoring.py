"""Configuration section ``monitoring``: event-time windows, drift and alert rules.

Every default below is documented on its field and in ``docs/monitoring.md``.

>>> cfg = MonitoringConfig()
>>> cfg.window_seconds, cfg.key_dims, [r.name for r in cfg.alerts.rules][:2]
(60, ['source', 'model'], ['latency_p95_high', 'latency_p99_high'])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from driftline.config.secrets import env_secret

#: Metric names an alert rule of kind ``threshold`` may watch: numeric columns of every
#: metrics row (see ``driftline.operators.aggregate.metrics_schema``).
ALERTABLE_METRICS: tuple[str, ...] = (
    "events",
    "model_calls",
    "errors",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cost_per_request_usd",
    "cache_hits",
    "cache_hit_rate",
    "cache_saved_usd",
    "confidence_mean",
    "confidence_p10",
    "pii_total",
    "injection_events",
    "injection_rate",
    "budget_exhausted_calls",
    "fallback_share",
    "psi_max",
    "ks_max",
    "js_max",
    "drifted_features",
    "confidence_drift_rel",
)

#: Drift methods a feature may be given (``auto`` lets driftline choose like Evidently).
DriftMethod = Literal["auto", "psi", "ks", "wasserstein", "jensenshannon", "chisquare"]
Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["info", "warning", "critical"]


class DriftFeature(BaseModel):
    """One monitored feature: its column, kind and (optionally) drift method."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Column name in the window input rows.")
    kind: Literal["numeric", "categorical", "list"] = Field(
        ..., description="numeric: PSI + KS; categorical: Jensen-Shannon distance; list: Jensen-Shannon over the list elements."
    )
    method: DriftMethod = Field(
        "auto",
        description="Method deciding whether the feature drifted; auto picks KS (<= auto_small_reference rows) or "
        "Wasserstein for numeric, chi-square (small) or Jensen-Shannon (large) for categorical, as Evidently does.",
    )
    threshold: float | None = Field(
        None, gt=0, description="Drift threshold of the method (p-value for ks/chisquare, distance otherwise); default per method."
    )

    @model_validator(mode="after")
    def _check_method(self) -> DriftFeature:
        if self.kind != "numeric" and self.method in ("psi", "ks", "wasserstein"):
            raise ValueError(f"method {self.method!r} needs a numeric feature; {self.name!r} is {self.kind}")
        return self


class DriftConfig(BaseModel):
    """How the per-window distributions are compared with a reference."""

    model_config = ConfigDict(extra="forbid")

    reference: Literal["warmup", "profile"] = Field(
        "warmup", description="warmup: the first warmup_windows windows of the run per key; profile: the file at profile_path."
    )
    warmup_windows: int = Field(5, ge=1, le=10_000, description="Windows merged into the reference in warmup mode.")
    profile_path: str | None = Field(None, description="Reference profile JSON built by `driftline profile` (reference: profile).")
    features: list[DriftFeature] = Field(
        default_factory=lambda: [
            DriftFeature(name="f_chars", kind="numeric"),
            DriftFeature(name="f_words", kind="numeric"),
            DriftFeature(name="f_sentiment_lex", kind="numeric"),
            DriftFeature(name="f_lang", kind="categorical"),
        ],
        description="Features whose distribution is compared; missing columns are skipped (drift null).",
    )
    include_confidence: bool = Field(True, description="Also compare model confidence (numeric) and labels (categorical).")
    psi_bins: int = Field(10, ge=2, le=100, description="PSI bins, cut at the reference's quantiles.")
    psi_epsilon: float = Field(
        1e-4, gt=0, lt=0.01, description="Share given to an empty bin before the PSI log ratio, so PSI stays finite."
    )
    psi_moderate: float = Field(0.1, gt=0, description="PSI at or above this is a moderate shift.")
    psi_significant: float = Field(0.25, gt=0, description="PSI at or above this is a significant shift.")
    confidence_levels: tuple[float, float, float] = Field(
        (0.05, 0.10, 0.15), description="Relative change of mean confidence that is minor, moderate, significant."
    )
    auto_small_reference: int = Field(1000, ge=1, description="References with at most this many values count as small (auto method).")
    categorical_top_k: int = Field(50, ge=2, le=10_000, description="Distinct categories kept per window and feature; the rest count as __other__.")
    min_window_values: int = Field(20, ge=1, description="Drift is not computed (null) for a window with fewer values of the feature.")
    window_exact_values: int = Field(
        100_000,
        ge=16,
        le=10_000_000,
        description="A window keeps up to this many distinct values of each numeric drift feature (and of model confidence) exactly, "
        "so its statistics equal the exact computation; beyond it the window falls back to the quantile sketch (see docs/monitoring.md).",
    )
    reference_exact_values: int = Field(
        10_000,
        ge=16,
        le=10_000_000,
        description="A reference profile stores a numeric feature's exact distribution (KS and Wasserstein exact) while it has at most "
        "this many distinct values; beyond it, a grid of reference_grid_points cells with exact counts (KS within 1/reference_grid_points).",
    )
    reference_grid_points: int = Field(
        2000, ge=10, le=1_000_000, description="Cells of a large reference's distribution grid; each holds at most 1/this of the values (the KS tolerance)."
    )

    @model_validator(mode="after")
    def _check(self) -> DriftConfig:
        if self.psi_moderate >= self.psi_significant:
            raise ValueError("psi_moderate must be below psi_significant")
        a, b, c = self.confidence_levels
        if not 0 < a < b < c:
            raise ValueError("confidence_levels must be increasing and positive")
        if self.reference == "profile" and not self.profile_path:
            raise ValueError("profile_path is required when reference is 'profile'")
        names = [f.name for f in self.features]
        if len(names) != len(set(names)):
            raise ValueError("features: a feature is listed twice")
        return self


class AlertRule(BaseModel):
    """``metric comparison threshold`` for each window and key, raising ``severity``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$", description="Rule id (snake_case); part of the alert's natural key.")
    kind: str = Field("threshold", description="Registered rule kind: threshold (a metric column) or drift (any feature's statistic).")
    metric: str = Field(..., description="Metric column (threshold kind) or drift statistic psi/ks/js/wasserstein (drift kind).")
    comparison: Comparison = Field(">", description="How the value is compared with the threshold.")
    threshold: float = Field(..., description="The bound.")
    severity: Severity = Field("warning", description="Severity of the alert.")
    min_calls: int = Field(0, ge=0, description="The rule is only evaluated for windows with at least this many model calls.")
    description: str = Field("", description="Shown in the alert annotation.")

    @model_validator(mode="after")
    def _check_metric(self) -> AlertRule:
        if self.kind == "threshold" and self.metric not in ALERTABLE_METRICS:
            from driftline.operators.aggregate.columns import window_columns  # registered columns (guardrails, evaluators)

            registered = [n for n, c in window_columns().items() if c.dtype.is_numeric()]
            if self.metric not in registered:
                raise ValueError(f"unknown metric {self.metric!r}; known: {', '.join([*ALERTABLE_METRICS, *registered])}")
        if self.kind == "drift" and self.metric not in ("psi", "ks", "js", "wasserstein"):
            raise ValueError(f"unknown drift statistic {self.metric!r}; known: psi, ks, js, wasserstein")
        return self  # other kinds are checked against the rule-kind registry when the engine is built


def _default_rules() -> list[AlertRule]:
    return [
        AlertRule(name="latency_p95_high", metric="latency_p95_ms", threshold=2000, severity="warning", min_calls=1,
                  description="95th percentile model latency above 2 s"),
        AlertRule(name="latency_p99_high", metric="latency_p99_ms", threshold=5000, severity="critical", min_calls=1,
                  description="99th percentile model latency above 5 s"),
        AlertRule(name="error_rate_high", metric="error_rate", threshold=0.05, severity="critical", min_calls=1,
                  description="more than 5% of model calls failed"),
        AlertRule(name="cost_per_request_high", metric="cost_per_request_usd", threshold=0.015, severity="warning", min_calls=1,
                  description="average cost per model call above $0.015"),
        AlertRule(name="confidence_drift", metric="confidence_drift_rel", threshold=0.10, severity="warning",
                  description="mean confidence moved more than 10% from the reference"),
        AlertRule(name="feature_psi_high", kind="drift", metric="psi", threshold=0.25, severity="warning",
                  description="a monitored distribution shifted significantly (PSI > 0.25)"),
        AlertRule(name="budget_exhausted", metric="budget_exhausted_calls", threshold=0, severity="critical",
                  description="calls were refused because a budget is exhausted"),
    ]


class AlertsConfig(BaseModel):
    """Alert rules and where alerts go (delivery: :mod:`driftline.sinks.alertmanager`, :mod:`driftline.sinks.webhook`)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[AlertRule] = Field(default_factory=_default_rules, description="Rules evaluated on every window row.")
    cooldown_seconds: float = Field(900.0, ge=0, description="A rule and key that fired is not fired again within this (event-time) span.")
    alertmanager_urls: list[str] = Field(
        default_factory=list,
        description="Alertmanager base URLs (http://alertmanager:9093); active alerts are POSTed to <url>/api/v2/alerts of each (list every member of an HA cluster).",
    )
    alertmanager_authorization: SecretStr | None = Field(
        None,
        description="Authorization header sent to Alertmanager, e.g. 'Bearer <token>' or 'Basic <base64>' (secret: $DRIFTLINE__MONITORING__ALERTS__ALERTMANAGER_AUTHORIZATION, ..._FILE or $<alertmanager_authorization_env>).",
    )
    alertmanager_authorization_env: str = Field(
        "DRIFTLINE_ALERTMANAGER_AUTHORIZATION", description="Environment variable holding the Authorization header value when alertmanager_authorization is not set otherwise."
    )
    alertmanager_timeout_seconds: float = Field(5.0, gt=0, le=120, description="Timeout of one POST to Alertmanager.")
    resend_interval_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Active alerts are re-sent to Alertmanager this often; keep it well below Alertmanager's resolve_timeout (5 min by default), "
        "which resolves an alert that is not re-sent in time.",
    )
    webhook_url: str | None = Field(None, description="A webhook receiving each alert transition once (signed JSON, or a chat message: webhook_format); none disables it.")
    webhook_format: Literal["json", "slack"] = Field(
        "json",
        description="json: the alerts as an Alertmanager-v2-shaped JSON list; slack: a chat message ({\"text\": ...}) for Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat).",
    )
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key signing webhook bodies (secret: $DRIFTLINE__MONITORING__ALERTS__WEBHOOK_SECRET, ..._FILE or $<webhook_secret_env>).")
    webhook_secret_env: str = Field("DRIFTLINE_WEBHOOK_SECRET", description="Environment variable holding the webhook secret when webhook_secret is not set otherwise.")
    webhook_signature_header: str = Field("X-Driftline-Signature", description="Header carrying 'sha256=<hex HMAC of timestamp.body>'.")
    webhook_timestamp_header: str = Field("X-Driftline-Timestamp", description="Header carrying the signing time (Unix seconds), part of the signed text.")
    webhook_signature_tolerance_seconds: float = Field(
        300.0, gt=0, le=86_400, description="Receivers refuse a signature whose timestamp is further than this from their clock (replay window; see verify())."
    )
    webhook_timeout_seconds: float = Field(5.0, gt=0, le=120, description="Timeout of one webhook POST.")
    webhook_retries: int = Field(3, ge=0, le=10, description="Retries of a failed webhook POST (exponential back-off) before it waits for the next delivery round.")
    generator_url: str = Field("", description="Link put in Alertmanager's generatorURL (a dashboard).")

    @model_validator(mode="after")
    def _secrets_from_env(self, info: ValidationInfo) -> AlertsConfig:
        if self.webhook_secret is None:
            self.webhook_secret = env_secret(info, self.webhook_secret_env)
        if self.alertmanager_authorization is None:
            self.alertmanager_authorization = env_secret(info, self.alertmanager_authorization_env)
        return self

    @field_validator("alertmanager_urls")
    @classmethod
    def _am_urls(cls, urls: list[str]) -> list[str]:
        for i, url in enumerate(urls):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"[{i}] must start with http:// or https://, got {url!r}")
            if url.rstrip("/").endswith("/api/v2/alerts"):
                raise ValueError(f"[{i}] give Alertmanager's base URL (without /api/v2/alerts), got {url!r}")
        return urls

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        if url is not None:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"must start with http:// or https://, got {url!r}")
            if url.rstrip("/").endswith("/api/v2/alerts"):
                raise ValueError(
                    "points at Alertmanager's API; set monitoring.alerts.alertmanager_urls to its base URL instead "
                    "(alerts are then re-sent while active, so Alertmanager does not resolve them after its resolve_timeout)"
                )
        return url

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = [r.name for r in rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(sorted(dup))}")
        return rules


class MetricsConfig(BaseModel):
    """What the Prometheus endpoint exports and how far its labels may grow (see docs/operations.md)."""

    model_config = ConfigDict(extra="forbid")

    label_value_limit: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Distinct values of one label dimension (a key dimension such as source or model, a budget's tenant, a refusal reason) "
        "exported per process; later values are exported as __other__.",
    )
    label_value_limits: dict[str, int] = Field(default_factory=dict, description="Per-dimension overrides of label_value_limit, e.g. {source: 500, model: 20}.")
    window_series_ttl_seconds: float = Field(
        900.0, gt=0, description="Window gauges of a key that had no window closed for this long (processing time) are no longer exported."
    )
    stall_seconds: float = Field(300.0, gt=0, description="/healthz answers 503 when the input has not been polled for this long (a stuck worker).")

    @field_validator("label_value_limits")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(k for k, v in value.items() if v < 1)
        if bad:
            raise ValueError(f"{', '.join(bad)}: a label value limit must be at least 1")
        return value


class ColumnsConfig(BaseModel):
    """Input column names read by the window aggregation (missing optional ones are tolerated)."""

    model_config = ConfigDict(extra="forbid")
    #: The fields that hold a value, not a column name (every other field names an input column).
    VALUE_FIELDS: ClassVar[frozenset[str]] = frozenset({"injection_threshold", "budget_error_class", "budget_fallback_reason", "primary_tier"})

    event_time: str = Field("event_time", description="Event-time column (Datetime UTC).")
    event_id: str = Field("event_id", description="Id column; the smallest id of a late slice names its late row.")
    model: str = Field("model_name", description="Model that answered (used for the model key when the route column is absent).")
    route: str = Field(
        "model_route",
        description="First-choice model of the row, whichever tier answered; the `model` key dimension uses it when present, so a failing model's errors stay on its own key.",
    )
    label: str = Field("model_label", description="Predicted label.")
    confidence: str = Field("model_confidence", description="Model confidence in [0, 1].")
    tier: str = Field("model_tier", description="Fallback tier that answered.")
    error_class: str = Field("model_error_class", description="Error class; null on success.")
    latency_ms: str = Field("model_latency_ms", description="Call latency in milliseconds.")
    input_tokens: str = Field("model_input_tokens", description="Prompt tokens.")
    output_tokens: str = Field("model_output_tokens", description="Completion tokens.")
    cost_usd: str = Field("model_cost_usd", description="Cost of the call in USD.")
    cached: str = Field("model_cached", description="True when the answer came from the cache.")
    cost_saved_usd: str = Field("model_cost_saved_usd", description="Cost the cache saved in USD.")
    pii_total: str = Field("pii_total", description="PII entities found in the event.")
    injection_score: str = Field("inj_risk_score", description="Prompt-injection risk score in [0, 1].")
    injection_threshold: float = Field(0.5, ge=0, le=1, description="Score at or above which an event counts as an injection attempt.")
    budget_error_class: str = Field("budget_exhausted", description="Error class meaning a budget refused the call.")
    fallback_reasons: str = Field("model_fallback_reasons", description="List column of reasons a tier was skipped.")
    budget_fallback_reason: str = Field("budget", description="Fallback reason meaning a budget refused a tier; such rows count as budget_exhausted_calls.")
    primary_tier: str | None = Field(
        None,
        description="Tier name of the first choice; other tiers count as fallbacks. Unset: the first tier of models.chain "
        "(a name that is not in the chain fails at start-up). Without it (telemetry has no tier column) fallback_share is null.",
    )

    def names(self) -> list[str]:
        """The input columns these settings name (every field but :attr:`VALUE_FIELDS`).

        >>> ColumnsConfig().names()[:3]
        ['event_time', 'event_id', 'model_name']
        """
        return [getattr(self, f) for f in type(self).model_fields if f not in self.VALUE_FIELDS]


class MonitoringConfig(BaseModel):
    """Settings of the monitoring stage: windows, drift and alerts."""

    model_config = ConfigDict(extra="forbid")

    window_seconds: int = Field(60, ge=1, le=86_400, description="Event-time window length (tumbling by default).")
    slide_seconds: int | None = Field(
        None, ge=1, description="When set, sliding windows advancing by this much; window_seconds must be a multiple of it."
    )
    allowed_lateness_seconds: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description="An event is late (counted in metrics_late, not windowed) when its window ended before the newest event time "
        "already seen in its input partition minus this.",
    )
    idle_partition_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="An input partition that delivered nothing for this long (system time, this run) no longer holds windows open; "
        "when every partition is idle the watermark advances with system time. The only place system time enters windowing.",
    )
    window_shards: int = Field(
        16,
        ge=1,
        le=4096,
        description="Window keys are spread over this many shards (work units Bytewax distributes over workers). Part of the "
        "recovery state: set it to at least the most workers you will ever run and do not change it for a recovery folder.",
    )
    end_of_input: Literal["auto", "close", "keep"] = Field(
        "auto",
        description="Windows still open when a drained run ends: close emits them (the input is complete), keep leaves them in the "
        "recovery snapshot so the next run continues them; auto keeps them when the run has a recovery folder, else closes them.",
    )
    align_to: str = Field("2020-01-01T00:00:00+00:00", description="Window boundaries are aligned to this UTC instant.")
    key_dims: list[str] = Field(
        default_factory=lambda: ["source", "model"],
        description="Dimensions a window is keyed by; 'model' is read from columns.model, others by column name (tenant, service...).",
    )
    exact_quantile_limit: int = Field(
        1024, ge=16, le=1_000_000, description="Latency quantiles are exact while a window holds at most this many distinct values."
    )
    sketch_relative_accuracy: float = Field(0.01, gt=0, le=0.05, description="Relative error bound of the quantile sketch beyond that.")
    pipeline_version: str = Field("", description="Written on every row; empty means the installed driftline version.")
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @model_validator(mode="after")
    def _check(self) -> MonitoringConfig:
        if self.slide_seconds is not None:
            if self.slide_seconds > self.window_seconds or self.window_seconds % self.slide_seconds:
                raise ValueError("slide_seconds must divide window_seconds")
        if not self.key_dims or len(set(self.key_dims)) != len(self.key_dims):
            raise ValueError("key_dims must be a non-empty list without repeats")
        from datetime import datetime

        try:
            dt = datetime.fromisoformat(self.align_to)
        except ValueError as exc:
            raise ValueError(f"align_to is not an ISO-8601 instant: {exc}") from None
        if dt.tzinfo is None:
            raise ValueError("align_to must carry a UTC offset")
        if self.metrics.window_series_ttl_seconds < self.window_seconds + self.allowed_lateness_seconds:
            raise ValueError(
                f"metrics.window_series_ttl_seconds ({self.metrics.window_series_ttl_seconds:g}) must cover a window and its lateness "
                f"({self.window_seconds + self.allowed_lateness_seconds:g} s), or a key's gauges vanish between two of its windows"
            )
        return self

    def check_drift_columns(self, available: Iterable[str]) -> None:
        """Refuse drift features that the flow's rows never carry (a feature the features
        section does not produce, a typo); the error names the key."""
        have = set(available)
        for i, f in enumerate(self.drift.features):
            if f.name not in have:
                near = sorted(c for c in have if c.startswith("f_"))
                raise ValueError(f"monitoring.drift.features[{i}].name: no column {f.name!r} in the flow's rows (features it produces: {', '.join(near) or 'none'})")

    @property
    def pane_seconds(self) -> int:
        """Granule the micro-batches are pre-aggregated by (slide, or the whole window)."""
        return self.slide_seconds or self.window_seconds
