"""Accounting: what a result costs, and making it durable before anything else happens.

For every result, in the thread that received it (:meth:`Accounting.received`, the
backend's ``on_results`` hook): the cost from the provider's usage and the price table;
the reservation replaced by that cost; the output-token estimate fed; the answer cached
and shared with the identical rows of the batch; then one ledger transaction (shared
with the answers that arrive at the same moment) holds the rows answered, the spend
and the cache entries, and this process's lower reservation totals are published.
Only when the result is handed over to the batch (:meth:`Accounting.handed_over`) are
the batches of other workers waiting for the same request released, and metrics are
counted per tier and batch (:class:`TierTally`) and added once.

>>> from driftline.config.models import BackendConfig
>>> from driftline.models.rules import RulesBackend
>>> t = TierTally(Tier(0, "rules", RulesBackend("rules", BackendConfig(kind="rules"), {}), 0.0, False))
>>> t.observe([Group(0, followers=[1])], [(0, ModelResult(label="positive", latency_ms=1.0))]); t.ok, t.cached
(1, 1)
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from driftline.clock import Clock
from driftline.metrics import observe_genai
from driftline.config.models import ModelsConfig
from driftline.models import metrics
from driftline.models.admission import Group
from driftline.models.budget import BudgetTracker, Refusal, Reservation
from driftline.models.cache import CachedAnswer, InFlight, ResponseCache
from driftline.models.estimate import OutputTokenEstimator
from driftline.models.ledger import CallLedger, Coord, DayScopeKey
from driftline.models.neardup import NearDuplicateIndex, namespace
from driftline.models.pricing import call_cost
from driftline.models.rows import BatchInputs, RowState, Tier
from driftline.models.types import ModelResult

log = logging.getLogger("driftline.models")

#: Error classes of requests that never reached the provider (no latency, no health outcome).
_NOT_SENT = frozenset({"circuit_open", "throttled"})


@dataclass(frozen=True, slots=True)
class Shared:
    """A request's outcome handed to the identical rows of other batches."""

    result: ModelResult
    cost_usd: float


class TierTally:
    """One tier's counters over one batch, added to the Prometheus metrics once."""

    __slots__ = ("tier", "ok", "errors", "cached", "saved", "skipped", "shared_failures", "tokens", "cost", "local_latency", "_latency", "latencies")

    def __init__(self, tier: Tier, skipped: Counter[str] | None = None) -> None:
        self.tier = tier
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.cached = 0
        self.saved = 0.0
        self.skipped: Counter[str] = skipped if skipped is not None else Counter()
        self.shared_failures: Counter[str] = Counter()
        self.tokens = [0, 0, 0, 0]  # input, output, cached, reasoning
        self.cost = 0.0
        self.local_latency: float | None = None
        self._latency = metrics.LATENCY.labels(**tier.labels) if tier.backend.remote else None
        self.latencies: list[float] = []  # answered requests (routing strategies)

    def observe(self, sends: list[Group], got: list[tuple[int, ModelResult]]) -> None:
        """Results of ``sends`` handed over (``group.cost`` is what each one cost)."""
        t = self.tokens
        latency = self._latency
        for j, res in got:
            group = sends[j]
            if res.input_tokens or res.output_tokens:
                t[0] += res.input_tokens
                t[1] += res.output_tokens
                t[2] += res.cached_tokens
                t[3] += res.reasoning_tokens
            self.cost += group.cost
            if latency is not None:
                if res.error_class not in _NOT_SENT:
                    latency.observe(res.latency_ms / 1000.0)
                    # OpenTelemetry GenAI client metrics: one operation per request sent
                    observe_genai("chat", self.tier.labels["backend"], self.tier.labels["model"], res.latency_ms / 1000.0, res.error_class, res.input_tokens, res.output_tokens)
            elif self.local_latency is None:
                self.local_latency = res.latency_ms  # this tier's own time; one observation per batch
            followers = len(group.followers) if group.followers else 0
            if res.error_class is None:
                self.ok += 1
                self.latencies.append(res.latency_ms)
                if followers:
                    self.cached += followers
                    self.saved += followers * group.cost
            else:
                self.errors[res.error_class] += 1
                if followers:
                    self.shared_failures[res.error_class] += followers

    def flush(self) -> None:
        tier = self.tier
        lbl = tier.labels
        for reason, count in (self.skipped + self.shared_failures).items():
            metrics.FALLBACKS.labels(tier=tier.name, reason=reason).inc(count)
        if self.skipped:
            metrics.CALLS.labels(**lbl, outcome="skipped").inc(sum(self.skipped.values()))
        if self.local_latency is not None:
            metrics.LATENCY.labels(**lbl).observe(self.local_latency / 1000.0)
        if self.ok:
            metrics.CALLS.labels(**lbl, outcome="success").inc(self.ok)
        if self.cached:
            metrics.CALLS.labels(**lbl, outcome="cached").inc(self.cached)
        if self.saved:
            metrics.COST_SAVED.labels(**lbl).inc(self.saved)
        for cls, count in self.errors.items():
            metrics.CALLS.labels(**lbl, outcome="error").inc(count)
            metrics.ERRORS.labels(**lbl, error_class=cls).inc(count)
            metrics.FALLBACKS.labels(tier=tier.name, reason=cls).inc(count)
        if self.tokens[0] or self.tokens[1]:
            for kind, value in zip(("input", "output", "cached", "reasoning"), self.tokens):
                metrics.TOKENS.labels(**lbl, kind=kind).inc(value)
        if self.cost:
            metrics.COST.labels(**lbl).inc(self.cost)
        if tier.health is not None:
            failed = sum(n for cls, n in self.errors.items() if cls not in _NOT_SENT)
            # remote: one latency per request; a local tier's one observation is its batch time
            latencies = self.latencies if tier.backend.remote else ([self.local_latency] if self.local_latency is not None else [])
            tier.health.observe(self.ok, failed, latencies)
        if self.errors:
            log.warning(orjson.dumps({"event": "model_tier_failures", "tier": tier.name, "errors": dict(self.errors), "rows": self.ok + sum(self.errors.values())}).decode())


class Accounting:
    """Cost, budgets, the learned estimate, the cache and the ledger, for one process."""

    def __init__(
        self,
        config: ModelsConfig,
        budgets: BudgetTracker,
        cache: ResponseCache | None,
        inflight: InFlight,
        estimator: OutputTokenEstimator,
        ledger: CallLedger | None,
        clock: Clock,
        config_hash: str,
        near: NearDuplicateIndex | None = None,
    ) -> None:
        self.config = config
        self.near = near
        self.budgets = budgets
        self.cache = cache
        self.inflight = inflight
        self.estimator = estimator
        self.ledger = ledger
        self.clock = clock
        self.config_hash = config_hash

    # -- results of requests -------------------------------------------------------
    def received(self, tier: Tier, sends: list[Group], got: list[tuple[int, ModelResult]], batch: BatchInputs, rows: list[RowState]) -> None:
        """Results of ``sends`` that just arrived, in the thread that received them: rows
        updated and everything durable in one ledger transaction.  Never raises: a failure
        is kept on the groups and raised by :meth:`handed_over` in the batch's own thread."""
        try:
            self._receive(tier, sends, got, batch, rows)
        except BaseException as exc:
            for j, _ in got:
                sends[j].error = exc

    def _receive(self, tier: Tier, sends: list[Group], got: list[tuple[int, ModelResult]], batch: BatchInputs, rows: list[RowState]) -> None:
        backend = tier.backend
        remote = backend.remote
        pricing = self.config.pricing if tier.priced else None
        ledger = self.ledger
        day = self.budgets.day() if ledger is not None else ""
        spend: dict[DayScopeKey, float] = defaultdict(float)
        settled: list[tuple[Reservation, float]] = []
        cache_rows: list[tuple[str, bytes]] = []
        answered: list[int] = []
        for j, res in got:
            group = sends[j]
            group.received = True
            lead = group.lead
            row = rows[lead]
            row.latency += res.latency_ms
            row.retries += res.retries
            cost = 0.0
            if pricing is not None:
                cost = group.cost = call_cost(pricing, backend.model, input_tokens=res.input_tokens, output_tokens=res.output_tokens, cached_tokens=res.cached_tokens)
                row.cost += cost
                row.cost_estimated |= res.tokens_estimated and cost > 0
            if remote and res.error_class != "circuit_open":
                for i in group.rows:
                    rows[i].remote = True
            if res.output_tokens and (res.ok or cost):
                self.estimator.observe(batch.tasks[lead], tier.name, res.output_tokens)
            if group.reservation is not None:
                settled.append((group.reservation, cost))
                self.budgets.settle(group.reservation, cost)
            if cost and ledger is not None:
                spend[(day, "tenant", batch.tenants[lead] or "")] += cost
                spend[(day, "source", batch.sources[lead] or "")] += cost
            if res.error_class is None:
                row.answer = res
                row.tier = tier
                if remote:
                    answered.append(lead)
                if group.cache_key is not None:
                    hit = CachedAnswer(res.label, res.output, res.confidence, res.model_version, cost)
                    if self.cache is not None:
                        self.cache.put(group.cache_key, hit)
                    if self.near is not None:
                        task = self.config.tasks[batch.tasks[lead]]
                        self.near.add(namespace(batch.tasks[lead], task.prompt_version, backend.model), batch.texts[lead], group.cache_key)
                    cache_rows.append((group.cache_key, hit.encode()))
                    for i in group.followers or ():
                        _from_cache(tier, rows[i], hit, group.cache_key, 1.0)
                        answered.append(i)
            elif group.followers:
                for i in group.rows:
                    rows[i].fail(tier, res.error_class)
            else:
                row.fail(tier, res.error_class)
        if ledger is not None and (answered or spend or cache_rows):
            durable = [i for i in answered if batch.coords[i] is not None]
            ledger.record(self._entries(durable, batch, rows), spend, now=self.clock.now().timestamp(), config_hash=self.config_hash, cache=cache_rows)
        if settled:
            self.budgets.recorded(settled)

    def handed_over(self, tier: Tier, sends: list[Group], got: list[tuple[int, ModelResult]], batch: BatchInputs, rows: list[RowState], tally: TierTally) -> None:
        """Results of ``sends`` the backend handed over, in the batch's thread: record those
        the hook did not see, count them, and let the batches waiting for the same requests go on."""
        unseen = []
        for item in got:
            group = sends[item[0]]
            if group.error is not None:
                raise group.error
            if not group.received:
                unseen.append(item)
        if unseen:
            self._receive(tier, sends, unseen, batch, rows)
        tally.observe(sends, got)
        if self.cache is not None:
            for j, res in got:
                group = sends[j]
                if group.pending is not None:  # durable by now: other batches may use it
                    assert group.cache_key is not None
                    self.inflight.resolve(group.cache_key, group.pending, Shared(res, group.cost))

    def refused(self, tier: Tier, refused: list[tuple[int, Refusal]], rows: list[RowState], tally: TierTally) -> None:
        """Rows a budget refused: they skip this tier and every tier not cheaper than it."""
        for i, refusal in refused:
            row = rows[i]
            row.budget_event = refusal.reason
            row.price_floor = tier.price_per_mtok
            row.skip(tier, "budget")
            tally.skipped["budget"] += 1
            self.budgets.refused(refusal, tier=tier.name)

    def from_cache(self, tier: Tier, group: Group, hit: CachedAnswer, rows: list[RowState], tally: TierTally, key: str | None, similarity: float = 1.0) -> None:
        """Rows answered by a cached answer (``key``; ``similarity`` below 1 for a near-duplicate)."""
        for i in group.rows:
            _from_cache(tier, rows[i], hit, key, similarity)
        tally.cached += len(group.rows)
        tally.saved += hit.cost_usd * len(group.rows)

    def followed(self, tier: Tier, group: Group, outcome: Shared | None, rows: list[RowState], tally: TierTally) -> None:
        """Rows that waited for the same request of another batch."""
        if outcome is not None and outcome.result.ok:
            r = outcome.result
            self.from_cache(tier, group, CachedAnswer(r.label, r.output, r.confidence, r.model_version, outcome.cost_usd), rows, tally, group.cache_key)
            return
        cls = outcome.result.error_class if outcome is not None else "internal"
        assert cls is not None
        for i in group.rows:
            rows[i].fail(tier, cls)
            rows[i].remote = True
        tally.shared_failures[cls] += len(group.rows)

    # -- durability ------------------------------------------------------------------
    def commit_rows(self, which: Iterable[int], batch: BatchInputs, rows: list[RowState]) -> None:
        """Record the remaining rows a remote tier answered or failed (end of the batch)."""
        if self.ledger is None:
            return
        entries = self._entries([i for i in which if rows[i].remote and not rows[i].committed and batch.coords[i] is not None], batch, rows)
        if entries:
            self.ledger.record(entries, {}, now=self.clock.now().timestamp(), config_hash=self.config_hash)

    @staticmethod
    def _entries(which: list[int], batch: BatchInputs, rows: list[RowState]) -> list[tuple[Coord, dict[str, object]]]:
        out = []
        for i in which:
            row = rows[i]
            coord = batch.coords[i]
            assert coord is not None
            out.append((coord, row.record(batch.tasks[i])))
            row.committed = True
        return out


def _from_cache(tier: Tier, row: RowState, hit: CachedAnswer, key: str | None, similarity: float) -> None:
    row.answer = ModelResult(label=hit.label, output=hit.output, confidence=hit.confidence, model_name=tier.backend.model, model_version=hit.model_version)
    row.tier = tier
    row.cached = True
    row.cache_key = key
    row.similarity = similarity
    row.saved = hit.cost_usd
    row.remote = True
