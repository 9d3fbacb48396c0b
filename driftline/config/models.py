"""Configuration section ``models``: backends, fallback chain, tasks, prices, budgets.

The defaults run fully offline: the chain is ``local`` (VADER sentiment on the CPU)
then ``rules`` (keywords), the task is ``sentiment``, and every price is zero.  A
remote tier is one more entry under ``backends`` plus its name in ``chain``:

.. code-block:: yaml

    models:
      chain: [primary, local, rules]
      backends:
        primary: {kind: openai, model: gpt-4o-mini, base_url: https://api.openai.com/v1,
                  api_key_env: OPENAI_API_KEY}
      pricing:
        gpt-4o-mini: {input_per_mtok: 0.15, cached_input_per_mtok: 0.075, output_per_mtok: 0.60}
      budgets:
        per_tenant_daily_usd: {acme: 25.0}

Every error names the bad key (``models.chain[0]: unknown backend 'primry'``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from driftline.config.secrets import env_secret

TaskKind = Literal["sentiment", "classification", "summarization", "extraction"]
BackendKind = str  # validated against the backend registry at start-up


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryConfig(_Strict):
    """Retries of one request to a remote backend (timeouts, connection errors, 429, 5xx)."""

    max_attempts: int = Field(3, ge=1, le=10, description="Attempts per request, the first included; 1 disables retries.")
    base_delay_s: float = Field(0.2, ge=0, description="Delay before the first retry; doubled (times `multiplier`) each further retry.")
    multiplier: float = Field(2.0, ge=1, description="Growth factor of the backoff delay.")
    max_delay_s: float = Field(10.0, ge=0, description="Upper bound of one backoff delay.")
    jitter: float = Field(0.25, ge=0, le=1, description="Each delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter].")
    max_retry_after_s: float = Field(30.0, ge=0, description="A Retry-After longer than this is not waited for: the request fails as rate_limit and the chain moves on.")


class CircuitConfig(_Strict):
    """Circuit breaker of one backend: closed -> open -> half-open -> closed."""

    failure_threshold: int = Field(5, ge=1, description="Consecutive failed attempts (timeout, network, rate_limit, server_error) that open the circuit.")
    cooldown_s: float = Field(30.0, ge=0, description="Time the circuit stays open before letting probe requests through (half-open).")
    half_open_successes: int = Field(2, ge=1, description="Successful probes in half-open that close the circuit again; one failure re-opens it.")


class RateLimit(_Strict):
    """Requests and tokens per minute (null: unlimited)."""

    requests_per_minute: float | None = Field(None, gt=0, description="Requests sent per minute, every attempt counted (retries and corrective retries too).")
    tokens_per_minute: float | None = Field(None, gt=0, description="Tokens per minute: estimated before each request (prompt characters / chars_per_token plus the learned output estimate), corrected from the usage the provider reports.")

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


class BackendConfig(_Strict):
    """One tier of the chain."""

    kind: BackendKind = Field(..., description="Registered backend kind: local, openai or rules (or any registered extension).")
    model: str | None = Field(None, description="Model name sent to the provider and used to look up prices; defaults per kind (local: vader, rules: keywords).")
    base_url: str | None = Field(None, description="Base URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 (openai kind only).")
    api_key: SecretStr | None = Field(None, description="API key (secret: $DRIFTLINE__MODELS__BACKENDS__<NAME>__API_KEY, ..._FILE or $<api_key_env>).")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key when api_key is not set otherwise; neither set means no Authorization header (vLLM, Ollama, llama.cpp).")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers, e.g. api-version for Azure OpenAI. Never put secrets here: use api_key_env.")
    timeout_s: float = Field(20.0, gt=0, description="Read/write timeout of one HTTP request.")
    connect_timeout_s: float = Field(3.0, gt=0, description="Connect timeout of one HTTP request.")
    max_in_flight: int = Field(16, ge=1, le=512, description="Cap on concurrent requests to this backend.")
    max_output_tokens: int = Field(256, ge=1, description="max_tokens sent with each request; also the cap of the learned output estimate budgets reserve.")
    json_mode: bool = Field(True, description="Send response_format={type: json_object}; turn off for servers that reject it.")
    retry: RetryConfig = Field(default_factory=RetryConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    rate_limit: RateLimit = Field(default_factory=RateLimit, description="This tier's limits, paced before each request is sent (remote tiers; shared by every worker and process using the ledger).")
    capabilities: list[str] | None = Field(
        None, description="Task names or kinds this tier is declared fit for (routing strategies cost and latency consider it only for those); null: every task it supports."
    )
    positive_threshold: float = Field(0.05, description="local kind: VADER compound score at or above which the label is positive.")
    negative_threshold: float = Field(-0.05, description="local kind: compound score at or below which the label is negative.")

    @model_validator(mode="after")
    def _key_from_env(self, info: ValidationInfo) -> BackendConfig:
        if self.api_key is None:
            self.api_key = env_secret(info, self.api_key_env)
        return self


class TaskConfig(_Strict):
    """A task: what the model is asked and how its answer is checked."""

    kind: TaskKind = Field("sentiment", description="sentiment, classification, summarization or extraction.")
    categories: list[str] = Field(default_factory=list, description="classification: the allowed labels.")
    default_category: str = Field("other", description="classification: label the rules tier gives when no keyword matches.")
    keywords: dict[str, list[str]] = Field(default_factory=dict, description="rules tier: label -> keywords (lower-case, whole words). Empty uses built-in sentiment words.")
    json_schema: dict[str, Any] | None = Field(None, description="extraction: JSON schema the output must satisfy (compiled at start-up).")
    system_prompt: str | None = Field(None, description="Override of the built-in system prompt; may use {categories} and {schema}.")
    user_prompt: str = Field("Text:\n{text}", description="User message template; {text} is the masked, sanitized input.")
    prompt_version: str = Field("v1", description="Bump when a prompt changes: part of the cache and ledger keys.")
    summary_words: int = Field(30, ge=1, description="summarization: words kept by the rules tier.")
    on_rate_limit: Literal["wait", "next_tier"] = Field(
        "wait",
        description="When a rate limit has no room for a request: wait (the batch waits, which slows consumption: backpressure) or next_tier (the row goes on to the next tier of its route at once, error class throttled).",
    )

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.kind == "classification" and not self.categories:
            raise ValueError("a classification task needs `categories`")
        if self.kind == "extraction" and self.json_schema is None:
            raise ValueError("an extraction task needs `json_schema`")
        if self.json_schema is not None:
            import fastjsonschema

            try:
                fastjsonschema.compile(self.json_schema)
            except fastjsonschema.JsonSchemaDefinitionException as exc:
                raise ValueError(f"json_schema is not a valid JSON schema: {exc}") from None
        return self


class PriceConfig(_Strict):
    """Prices of one model, in US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0, description="Uncached input (prompt) tokens.")
    cached_input_per_mtok: float | None = Field(None, ge=0, description="Cached input tokens; defaults to the input price.")
    output_per_mtok: float = Field(0.0, ge=0, description="Output tokens, reasoning tokens included.")


class BudgetConfig(_Strict):
    """Daily spending limits (UTC day of processing time)."""

    per_tenant_daily_usd: dict[str, float] = Field(default_factory=dict, description="tenant -> daily limit in USD.")
    default_tenant_daily_usd: float | None = Field(None, ge=0, description="Limit of tenants not listed; null means unlimited.")
    per_source_daily_usd: dict[str, float] = Field(default_factory=dict, description="source -> daily limit in USD.")
    default_source_daily_usd: float | None = Field(None, ge=0, description="Limit of sources not listed; null means unlimited.")
    on_exhausted: Literal["next_tier", "local"] = Field(
        "next_tier", description="next_tier: try the next tier of the chain (skipping tiers that are not cheaper); local: go straight to the first non-remote tier."
    )
    output_estimate_percentile: float = Field(95.0, gt=0, le=100, description="A request reserves this percentile of the output tokens its task and tier billed recently (capped by max_output_tokens).")
    output_estimate_window: int = Field(256, ge=1, description="How many recent requests per task and tier the output estimate looks at.")
    output_estimate_min_samples: int = Field(3, ge=1, description="Until a task and tier has this many answers, a request reserves max_output_tokens.")
    reservation_lease_s: float = Field(
        120.0, gt=0, description="Reservations another process published and has not refreshed (by reserving or settling) for this long are ignored: it is presumed dead."
    )


class NearDuplicateConfig(_Strict):
    """Near-duplicate cache: a masked input similar enough to a cached one reuses its answer (off by default)."""

    enabled: bool = Field(False, description="Look up near-duplicates of the inputs the exact cache misses (remote tiers, needs cache.enabled).")
    threshold: float = Field(0.95, gt=0, le=1, description="Minimum Jaccard similarity of the normalised word shingles (words and word pairs) for a hit.")
    num_perm: int = Field(64, ge=8, le=512, description="MinHash permutations (candidate search by locality-sensitive hashing; hits are confirmed by the exact similarity).")
    bands: int = Field(16, ge=1, description="LSH bands (num_perm must be a multiple): more bands find less similar candidates.")
    max_entries: int = Field(20_000, ge=1, description="Inputs remembered per process (oldest forgotten first).")
    guard: bool = Field(True, description="Refuse a hit whose texts differ in negations (with the word they negate) or in numbers.")

    @model_validator(mode="after")
    def _bands_divide(self) -> NearDuplicateConfig:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class CacheConfig(_Strict):
    """Response cache of remote tiers: in memory, and durable in the call ledger when there is one."""

    enabled: bool = Field(True, description="Cache answers of remote backends; identical inputs in flight at the same time are also sent once.")
    ttl_s: float = Field(3600.0, gt=0, description="Age after which an entry is no longer used.")
    max_entries: int = Field(100_000, ge=1, description="Least recently used entries are evicted beyond this.")
    near_duplicate: NearDuplicateConfig = Field(default_factory=NearDuplicateConfig)


class BatchingConfig(_Strict):
    """How rows are grouped before the models are called."""

    max_rows: int = Field(64, ge=1, description="A batch is called as soon as it holds this many rows.")
    max_wait_ms: float = Field(200.0, ge=0, description="...or when its oldest row has waited this long.")


class LedgerConfig(_Strict):
    """The replay-safe call ledger (SQLite): results, spend, reservations, cached answers."""

    enabled: bool = Field(True, description="Record results by source coordinates so replayed events are not billed twice.")
    path: str = Field(
        "state/model_ledger.sqlite",
        description="SQLite file shared by every worker and process of a host; a relative path is kept in the recovery folder. Multi-host: see docs/models.md.",
    )
    journal_mode: Literal["wal", "delete"] = Field(
        "wal",
        description="wal: the fast default for processes of one host; delete: for a ledger on a network file system shared by several hosts (WAL needs memory shared by all its users, which only one host has).",
    )
    fsync: Literal["batch", "answer"] = Field(
        "batch",
        description=(
            "Every answer is committed the moment it arrives and survives the process being killed from then on. batch: the ledger is fsynced "
            "once per batch, before its results leave the step (a power loss re-bills at most the batch in flight); answer: every commit is fsynced."
        ),
    )
    retention_s: float = Field(6 * 3600.0, gt=0, description="Entries older than this are pruned; must exceed the recovery snapshot interval plus the backup interval.")
    prune_every: int = Field(200, ge=1, description="Prune once every this many batch commits.")


class RateLimitsConfig(_Strict):
    """Per-tenant rate limits (per-tier limits are under ``backends.<tier>.rate_limit``)."""

    per_tenant: dict[str, RateLimit] = Field(default_factory=dict, description="tenant -> limits over all its remote requests.")
    default_tenant: RateLimit = Field(default_factory=RateLimit, description="Limits of each tenant not listed (each tenant has its own).")
    next_tier_max_wait_ms: float = Field(
        0.0, ge=0, description="Tasks with on_rate_limit: next_tier wait at most this long for room before the row moves on."
    )
    headroom: float = Field(
        0.02,
        ge=0,
        lt=0.5,
        description=(
            "Share of every limit left unused. Requests are paced by when they leave; the provider counts when they arrive, a few milliseconds "
            "later or sooner, so a limit used to the last request shows up as N+1 in some minute at the provider."
        ),
    )
    hosts: int = Field(
        1, ge=1, description="Hosts enforcing these limits with separate ledgers: each takes 1/hosts of every limit. Leave 1 when every process shares one ledger (see docs/models.md)."
    )
    pause_refresh_ms: float = Field(100.0, ge=0, description="How often a process reads the pauses other processes published (a 429's Retry-After).")


class RoutingConfig(_Strict):
    """How each row's route through the tiers is chosen (a registered strategy)."""

    strategy: str = Field("chain", description="chain (the configured order), cost, latency, health, or a registered strategy.")
    latency_percentile: float = Field(90.0, gt=0, le=100, description="latency: tiers are ranked by this percentile of their recent request latencies.")
    latency_window: int = Field(200, ge=1, description="latency: how many recent successful requests per tier the percentile looks at.")
    min_samples: int = Field(10, ge=1, description="latency and health: a tier with fewer recent observations is tried (latency) or presumed healthy (health).")
    error_rate_threshold: float = Field(0.5, ge=0, le=1, description="A tier whose recent error rate is above this is unhealthy (cost, latency and health skip it).")
    health_window_s: float = Field(60.0, gt=0, description="Outcomes older than this are forgotten, so a skipped tier is tried again.")


def _default_backends() -> dict[str, BackendConfig]:
    return {"local": BackendConfig(kind="local"), "rules": BackendConfig(kind="rules")}


class ModelsConfig(_Strict):
    """Settings of the models stage."""

    task: str = Field("sentiment", description="Task run on every event unless `task_by_source` names another.")
    task_by_source: dict[str, str] = Field(default_factory=dict, description="source -> task name.")
    tasks: dict[str, TaskConfig] = Field(default_factory=lambda: {"sentiment": TaskConfig(kind="sentiment")}, description="Named tasks.")
    backends: dict[str, BackendConfig] = Field(default_factory=_default_backends, description="Named tiers; the name is what `model_tier` records.")
    chain: list[str] = Field(default_factory=lambda: ["local", "rules"], description="Fallback order. A rules tier is appended if the chain does not end with one.")
    pricing: dict[str, PriceConfig] = Field(default_factory=dict, description="model -> prices; models not listed cost zero (and log a warning once if remote).")
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    chars_per_token: float = Field(4.0, gt=0, description="Token estimate (characters per token) used when a provider reports no usage and for budget checks.")

    @field_validator("chain")
    @classmethod
    def _chain_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("the chain needs at least one tier")
        if len(set(v)) != len(v):
            raise ValueError("a tier appears twice in the chain")
        return v

    @model_validator(mode="after")
    def _check_names(self) -> ModelsConfig:
        for i, name in enumerate(self.chain):
            if name not in self.backends:
                raise ValueError(f"chain[{i}]: unknown backend {name!r} (known: {sorted(self.backends)})")
        if self.task not in self.tasks:
            raise ValueError(f"task: unknown task {self.task!r} (known: {sorted(self.tasks)})")
        for src, t in self.task_by_source.items():
            if t not in self.tasks:
                raise ValueError(f"task_by_source.{src}: unknown task {t!r}")
        for name, b in self.backends.items():
            if b.kind == "openai" and not b.base_url:
                raise ValueError(f"backends.{name}.base_url: required for kind openai")
            if b.kind == "openai" and not b.model:
                raise ValueError(f"backends.{name}.model: required for kind openai")
        return self

    def config_hash(self) -> str:
        """Hash of what decides a result (task, prompts, chain, backends' models): the ledger's key part."""
        relevant = {
            "task": self.task,
            "task_by_source": self.task_by_source,
            "tasks": {k: v.model_dump(mode="json", exclude={"on_rate_limit"}) for k, v in self.tasks.items()},
            "chain": self.chain,
            "backends": {k: {"kind": b.kind, "model": b.model, "base_url": b.base_url} for k, b in self.backends.items() if k in self.chain},
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
