"""The model service: runs a frame of requests through the fallback chain.

For every row, in order: a result recorded in the call ledger is reused (replay);
otherwise each tier of the row's route is tried until one answers.  The route is the
chain, or what the configured routing strategy (:mod:`driftline.models.routing`) chose
for the row's task.  Per tier the work is split in three small pieces:

- **admission** (:mod:`driftline.models.admission`): privacy routing, task support,
  the response cache, identical inputs grouped into one request (and rows following a
  request another batch has in flight), budget reservations;
- **the call** (:mod:`driftline.models.calls`): the tier's :class:`Backend` answers,
  results handed over as they complete, its circuit breaker consulted first, and
  every attempt paced by its rate limits (:mod:`driftline.models.ratelimit`);
- **accounting** (:mod:`driftline.models.accounting`): cost, budgets settled, the
  learned output estimate, the cache, metrics, and each answer durable in the ledger
  before the next result is taken.

Failures are classified and the row moves on; a rules tier closes every chain, so no
row is ever left without a result.  When the first tier is a local model that answers
every row anyway (the default chain: VADER, then rules), a batch skips the per-row
bookkeeping: the backend answers it as columns (:class:`~driftline.models.base.ColumnBackend`),
with the same result columns and metrics.  The service is shared by the worker threads of a
process and runs their batches concurrently.

>>> from driftline.config.models import ModelsConfig, LedgerConfig
>>> svc = ModelService(ModelsConfig(ledger=LedgerConfig(enabled=False)))
>>> out = svc.process(pl.DataFrame({"text": ["great service, thanks!", "awful"]})).results
>>> out.select("model_label", "model_tier").rows()
[('positive', 'local'), ('negative', 'local')]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
import polars as pl

from driftline.clock import Clock, SystemClock
from driftline.config.models import BackendConfig, ModelsConfig
from driftline.models import metrics
from driftline.models.accounting import Accounting, TierTally
from driftline.models.admission import MAX_WAVES, Admission, Group
from driftline.models.answer_check import AnswerCheck, check_answers
from driftline.models.base import Backend, ColumnBackend, RetryHook, build_backend
from driftline.models.budget import BudgetTracker, budget_events_frame
from driftline.models.cache import InFlight, ResponseCache
from driftline.models.calls import call_tier
from driftline.models.estimate import OutputTokenEstimator
from driftline.models.ledger import CallLedger
from driftline.models.neardup import NearDuplicateIndex
from driftline.models.pricing import estimate_tokens, is_priced
from driftline.models.prompts import TaskSpec
from driftline.models.ratelimit import LedgerPacing, MemoryPacing, TierGate
from driftline.models.routing import Router, TierHealth
from driftline.models.rows import MODEL_OUTPUT_SCHEMA, ROUTE_COLUMN, BatchInputs, RowState, Tier, answered_frame, result_frame
from driftline.models.types import ModelRequest, ModelResult

log = logging.getLogger("driftline.models")

__all__ = ["MODEL_OUTPUT_SCHEMA", "ROUTE_COLUMN", "ModelBatchResult", "ModelService", "Tier", "model_output_schema"]

_NO_EVENTS = budget_events_frame([])

#: How long a row waits for an identical request another batch has in flight.
FOLLOW_TIMEOUT_S = 600.0


def model_output_schema(cfg: ModelsConfig | None = None) -> dict[str, pl.DataType]:
    """The result columns the models stage adds (stable, whatever the configuration)."""
    return {**MODEL_OUTPUT_SCHEMA, ROUTE_COLUMN: pl.Utf8}


@dataclass(slots=True)
class ModelBatchResult:
    """The input rows with result columns, plus budget events raised while computing them."""

    results: pl.DataFrame
    budget_events: pl.DataFrame


class ModelService:
    """Backends, breakers, cache, budgets and ledger of one worker process.

    ``backends`` lets tests or extensions pass pre-built backends by tier name;
    ``answer_check`` judges each tier's answers (:mod:`driftline.models.answer_check`).
    """

    def __init__(self, config: ModelsConfig, clock: Clock | None = None, *, backends: Mapping[str, Backend] | None = None, answer_check: AnswerCheck | None = None) -> None:
        self.config = config
        self.answer_check = answer_check
        self.clock = clock or SystemClock()
        self.tasks = {name: TaskSpec(name, t) for name, t in config.tasks.items()}
        self.config_hash = config.config_hash()
        chain = list(config.chain)
        tier_cfgs: dict[str, BackendConfig] = dict(config.backends)
        if tier_cfgs[chain[-1]].kind != "rules":
            name = "rules" if "rules" not in tier_cfgs else "rules_final"
            tier_cfgs[name] = BackendConfig(kind="rules")
            chain.append(name)
        self.tiers: list[Tier] = []
        for i, name in enumerate(chain):
            backend = (backends or {}).get(name) or build_backend(
                name, tier_cfgs[name], self.tasks, self.clock, chars_per_token=config.chars_per_token, on_retry=self._retry_counter(i)
            )
            price = config.pricing.get(backend.model)
            priced = is_priced(config.pricing, backend.model)
            if backend.remote and not priced:
                log.warning(orjson.dumps({"event": "model_unpriced", "tier": name, "model": backend.model}).decode())
            self.tiers.append(Tier(i, name, backend, (price.input_per_mtok + price.output_per_mtok) if price else 0.0, priced))
        self.router = Router(config.routing, self.tiers)
        if not self.router.fixed:  # strategies look at recent outcomes and latencies
            for t in self.tiers:
                t.health = TierHealth(config.routing, self.clock)
        # only results involving a remote call are recorded: a local-only chain needs no ledger
        led = config.ledger
        has_remote = any(t.backend.remote for t in self.tiers)
        self.ledger = (
            CallLedger(led.path, led.retention_s, led.prune_every, fsync=led.fsync, journal_mode=led.journal_mode, cache_ttl_s=config.cache.ttl_s, cache_max_entries=config.cache.max_entries)
            if led.enabled and has_remote
            else None
        )
        self.budgets = BudgetTracker(config.budgets, self.clock, self.ledger)
        self.cache = ResponseCache(config.cache.max_entries, config.cache.ttl_s, self.clock, self.ledger) if config.cache.enabled else None
        nd = config.cache.near_duplicate
        near = NearDuplicateIndex(nd.threshold, num_perm=nd.num_perm, bands=nd.bands, max_entries=nd.max_entries, guard=nd.guard) if nd.enabled and self.cache is not None else None
        # rate limits and Retry-After pauses: in the ledger, shared by every process using it
        pacing = LedgerPacing(self.ledger) if self.ledger is not None else MemoryPacing()
        for t in self.tiers:
            if t.backend.remote:
                t.backend.gate = TierGate(
                    t.name, t.backend.config.rate_limit, config.rate_limits, pacing, self.clock,
                    max_pause_s=t.backend.config.retry.max_retry_after_s, on_limit=lambda task: self.tasks[task].config.on_rate_limit,
                )
        b = config.budgets
        estimator = OutputTokenEstimator(b.output_estimate_percentile, b.output_estimate_window, b.output_estimate_min_samples)
        self.inflight = InFlight()
        self.estimator = estimator
        self.admission = Admission(config, self.tasks, self.budgets, self.cache, self.inflight, estimator, near)
        self.accounting = Accounting(config, self.budgets, self.cache, self.inflight, estimator, self.ledger, self.clock, self.config_hash, near)
        self._whole = self._whole_batch_tier()

    def _whole_batch_tier(self) -> Tier | None:
        """The first tier when it answers every row of any batch by itself, so a batch needs
        no per-row state: a local backend with answer columns (:class:`ColumnBackend`)
        that runs every task, unpriced, without circuit breaker or answer check, first on
        a fixed route, and no ledger to replay results from."""
        tier = self.tiers[0]
        b = tier.backend
        if not isinstance(b, ColumnBackend) or b.remote or tier.priced or b.breaker is not None or b.gate is not None:
            return None
        if not self.router.fixed or self.ledger is not None or not all(b.supports(spec) for spec in self.tasks.values()):
            return None
        if self.answer_check is not None and self.answer_check.applies(tier):
            return None
        return tier

    def _retry_counter(self, index: int) -> RetryHook:
        def on_retry(error_class: str) -> None:
            metrics.RETRIES.labels(**self.tiers[index].labels, error_class=error_class).inc()

        return on_retry

    # ------------------------------------------------------------------
    def process(self, frame: pl.DataFrame) -> ModelBatchResult:
        """Add the result columns of :data:`MODEL_OUTPUT_SCHEMA` to ``frame`` (same rows, same order).

        Thread-safe: the batches of several Bytewax worker threads run at the same time.
        """
        n = frame.height
        if n == 0:
            return ModelBatchResult(frame.with_columns([pl.lit(None, t).alias(c) for c, t in model_output_schema().items()]), _NO_EVENTS)
        whole = self._answer_whole(frame) if self._whole is not None else None
        if whole is not None:
            return ModelBatchResult(whole, self._drain_events())
        batch = BatchInputs.from_frame(frame, task=self.config.task, task_by_source=self.config.task_by_source)
        rows = [RowState() for _ in range(n)]
        replayed = self.ledger.lookup(batch.coords, self.config_hash) if self.ledger is not None and any(c is not None for c in batch.coords) else {}
        pending = []
        for route, reason, which in self._routes([i for i in range(n) if i not in replayed], batch):
            for i in which:
                rows[i].route_reason = reason
            metrics.ROUTES.labels(tier=route[0].name, reason=reason).inc(len(which))
            for tier in route:
                if not which:
                    break
                which = self._run_tier(tier, which, batch, rows)
            pending += which
        for i in pending:  # only if the final rules tier itself crashed
            rows[i].answer = ModelResult.failure("internal", "no tier answered")
            rows[i].reasons.append("none:internal")
        results = result_frame(frame, rows, batch.tasks, replayed, self.tiers)
        self.accounting.commit_rows(range(n), batch, rows)  # rows a remote tier failed and a later tier answered
        if self.ledger is not None:
            self.ledger.sync()  # on disk before the results leave the step
        return ModelBatchResult(results, self._drain_events())

    def _drain_events(self) -> pl.DataFrame:
        """The budget events raised since the last batch (logged and counted)."""
        events = self.budgets.drain_events()
        for e in events:
            metrics.BUDGET_EVENTS.labels(scope=e.scope).inc()
            log.warning(orjson.dumps({"event": "model_budget_exhausted", "scope": e.scope, "tier": e.tier, "action": e.action, "cause": e.cause, "day": e.day}).decode())
        return budget_events_frame(events) if events else _NO_EVENTS

    def _answer_whole(self, frame: pl.DataFrame) -> pl.DataFrame | None:
        """The results of a batch the first tier answers whole (see :meth:`_whole_batch_tier`),
        column by column: the same columns and metrics as the row path gives.  None when the
        backend failed: the row path then runs the batch (and files the failure)."""
        tier = self._whole
        assert tier is not None
        backend = tier.backend
        assert isinstance(backend, ColumnBackend)
        n = frame.height
        cols = frame.columns
        text_col = "model_input" if "model_input" in cols else "text"
        texts = frame[text_col] if text_col in cols else pl.repeat("", n, dtype=pl.Utf8, eager=True)
        task, by_source = self.config.task, self.config.task_by_source
        if "source" in cols and by_source:
            tasks = frame["source"].replace_strict(dict(by_source), default=task, return_dtype=pl.Utf8)
        else:
            tasks = pl.repeat(task, n, dtype=pl.Utf8, eager=True)
        try:
            got = backend.answer_columns(texts)
            if got.frame.height != n:
                raise RuntimeError(f"backend returned {got.frame.height} answers for {n} texts")
        except Exception as exc:  # the row path calls again and files the crash per row
            log.warning(orjson.dumps({"event": "model_columns_failed", "tier": tier.name, "rows": n, "error": type(exc).__name__}).decode())
            return None
        metrics.ROUTES.labels(tier=tier.name, reason="chain").inc(n)
        tally = TierTally(tier)
        tally.ok = n
        tally.local_latency = got.latency_ms
        tally.flush()
        return answered_frame(frame, tasks, got.frame, tier, got.latency_ms, "chain")

    def _routes(self, pending: list[int], batch: BatchInputs) -> list[tuple[list[Tier], str, list[int]]]:
        """The rows of each route: one route per task of the batch (the chain for all without a strategy)."""
        if not pending:
            return []
        if self.router.fixed:
            return [(self.tiers, "chain", pending)]
        by_task: dict[str, list[int]] = {}
        for i in pending:
            by_task.setdefault(batch.tasks[i], []).append(i)
        return [(*self.router.route(self.tasks[task]), which) for task, which in by_task.items()]

    def _run_tier(self, tier: Tier, pending: list[int], batch: BatchInputs, rows: list[RowState]) -> list[int]:
        """Run ``pending`` rows through one tier; returns those it did not answer."""
        groups, skipped = self.admission.screen(tier, pending, batch, rows)
        tally = TierTally(tier, skipped)
        wave = 0
        while groups:
            plan = self.admission.admit(tier, groups, batch, last_wave=wave == MAX_WAVES - 1)
            for group, hit, key, similarity in plan.hits:
                self.accounting.from_cache(tier, group, hit, rows, tally, key, similarity)
            self.accounting.refused(tier, plan.refused, rows, tally)
            if plan.send:
                self._call(tier, plan.send, batch, rows, tally)
            for group, pending_request in plan.follow:
                self.accounting.followed(tier, group, pending_request.wait(FOLLOW_TIMEOUT_S), rows, tally)
            groups = plan.deferred
            wave += 1
        tally.flush()
        if self.answer_check is not None and self.answer_check.applies(tier):
            check_answers(self.answer_check, tier, pending, batch, rows, self.tiers[0].backend.model)
        return [i for i in pending if rows[i].answer is None]

    def _call(self, tier: Tier, sends: list[Group], batch: BatchInputs, rows: list[RowState], tally: TierTally) -> None:
        keys, texts, tasks, tenants = batch.keys, batch.texts, batch.tasks, batch.tenants
        gate = tier.backend.gate
        if tier.backend.remote:
            # the idempotency key names the event, the task, the tier and the configuration:
            # the same request after a crash carries the same key
            suffix = f"/{tier.name}/{self.config_hash}"
            traces = batch.traces
            requests = [
                ModelRequest(
                    f"{keys[g.lead]}/{tasks[g.lead]}{suffix}", texts[g.lead], tasks[g.lead], tenants[g.lead],
                    self._tokens(tier, tasks[g.lead], texts[g.lead]) if gate is not None and gate.limits_tokens else 0, trace=traces[g.lead],
                )
                for g in sends
            ]
        else:
            requests = [ModelRequest(keys[g.lead], texts[g.lead], tasks[g.lead]) for g in sends]

        def received(got: list[tuple[int, ModelResult]]) -> None:
            self.accounting.received(tier, sends, got, batch, rows)

        # a remote tier's answers are recorded by the thread that received them; the
        # others are accounted for as they are handed over
        hook = received if tier.backend.remote else None
        try:
            for got in call_tier(tier, requests, self.config.batching.max_rows, hook):
                self.accounting.handed_over(tier, sends, got, batch, rows, tally)
        finally:  # rows of other batches waiting for these requests are never left waiting
            self.inflight.resolve_all([(g.cache_key, g.pending) for g in sends if g.cache_key is not None and g.pending is not None], None)

    def _tokens(self, tier: Tier, task: str, text: str) -> int:
        """Tokens one attempt is expected to take (tokens-per-minute limits): prompt plus the learned output estimate."""
        return estimate_tokens(self.admission.prompt_chars[task] + len(text), self.config.chars_per_token) + self.estimator.estimate(task, tier.name, tier.backend.config.max_output_tokens)

    def estimate_cost(self, tier_name: str, task: str, text: str) -> float:
        """The cost reserved against budgets before ``text`` is sent to tier ``tier_name`` now."""
        return self.admission.estimate(next(t for t in self.tiers if t.name == tier_name), task, text)

    def close(self) -> None:
        for t in self.tiers:
            t.backend.close()
        if self.ledger is not None:
            self.ledger.close()
