"""Admission: which rows of a batch a tier may take, and which need a request at all.

For each tier, in two steps:

1. :meth:`Admission.screen` (per row, once): a tier is skipped when it cannot run the
   row's task (``unsupported``), when it is remote and the row is private (``privacy``:
   ``route_local`` or classification ``restricted``), or when an earlier tier's budget
   refusal rules it out (``budget``: not cheaper, or remote with ``on_exhausted:
   local``).  The rows left are grouped by their response-cache key, so identical
   masked inputs make one request (remote tiers with the cache on).
2. :meth:`Admission.admit` (per wave): a group whose answer is cached is answered from
   the cache; one whose request is already in flight in another batch of this process
   follows it; with the near-duplicate cache on, one whose masked input is similar
   enough to an input already answered takes that answer; the others reserve their
   estimated cost against budgets and are sent.
   A request that does not fit while this batch holds reservations for the same budget
   waits for the next wave (those reservations are settled by then, usually far below
   their estimate); one that does not fit otherwise is refused.

>>> from driftline.config.models import ModelsConfig
>>> from driftline.models import ModelService
>>> svc = ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}}))
>>> b = BatchInputs.from_frame(pl.DataFrame({"text": ["good", "good"], "route_local": [True, False]}), task="sentiment", task_by_source={})
>>> rows = [RowState(), RowState()]
>>> groups, skipped = svc.admission.screen(svc.tiers[0], [0, 1], b, rows)
>>> [g.rows for g in groups], dict(skipped)
([[0], [1]], {})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl  # noqa: F401  (doctest)

from driftline.config.models import ModelsConfig
from driftline.models.budget import BudgetTracker, Refusal, Reservation
from driftline.models.cache import CachedAnswer, InFlight, Pending, ResponseCache, cache_key
from driftline.models import metrics
from driftline.models.estimate import OutputTokenEstimator
from driftline.models.neardup import NearDuplicateIndex, namespace
from driftline.models.pricing import call_cost, estimate_tokens
from driftline.models.prompts import TaskSpec
from driftline.models.rows import BatchInputs, RowState, Tier

#: A batch admits a tier's requests in at most this many waves (the last one refuses what does not fit).
MAX_WAVES = 16


class Group:
    """Rows of one batch that make the same request to a tier: the first one leads, the
    others follow (share its answer).  One per row on most tiers, so kept small."""

    __slots__ = ("lead", "followers", "cache_key", "reservation", "pending", "cost", "received", "error")

    def __init__(self, lead: int, cache_key: str | None = None, followers: list[int] | None = None) -> None:
        self.lead = lead
        self.followers = followers
        self.cache_key = cache_key
        self.reservation: Reservation | None = None
        self.pending: Pending | None = None  # this process's registration of the request in flight
        self.cost = 0.0  # what the request cost, once answered
        self.received = False  # its result is accounted for (and durable)
        self.error: BaseException | None = None  # accounting failed in the receiving thread

    @property
    def rows(self) -> list[int]:
        return [self.lead, *self.followers] if self.followers else [self.lead]

    def follow(self, i: int) -> None:
        if self.followers is None:
            self.followers = [i]
        else:
            self.followers.append(i)


@dataclass(slots=True)
class Plan:
    """What one wave does with a tier's groups."""

    send: list[Group] = field(default_factory=list)
    hits: list[tuple[Group, CachedAnswer, str, float]] = field(default_factory=list)  # answer, its cache key, similarity
    follow: list[tuple[Group, Pending]] = field(default_factory=list)
    deferred: list[Group] = field(default_factory=list)
    refused: list[tuple[int, Refusal]] = field(default_factory=list)


class Admission:
    """Privacy routing, budgets, the response cache and requests in flight, for one process."""

    def __init__(
        self,
        config: ModelsConfig,
        tasks: Mapping[str, TaskSpec],
        budgets: BudgetTracker,
        cache: ResponseCache | None,
        inflight: InFlight,
        estimator: OutputTokenEstimator,
        near: NearDuplicateIndex | None = None,
    ) -> None:
        self.config = config
        self.near = near
        self.tasks = tasks
        self.budgets = budgets
        self.cache = cache
        self.inflight = inflight
        self.estimator = estimator
        self.prompt_chars = {name: len(spec.system_prompt()) + len(spec.config.user_prompt) for name, spec in tasks.items()}

    # -- per row -----------------------------------------------------------------
    def screen(self, tier: Tier, pending: list[int], batch: BatchInputs, rows: list[RowState]) -> tuple[list[Group], Counter[str]]:
        """Groups of rows the tier may take; the others get their skip reason."""
        backend = tier.backend
        local_only = self.config.budgets.on_exhausted == "local"
        skipped: Counter[str] = Counter()
        supported = {name: backend.supports(spec) for name, spec in self.tasks.items()}
        if not backend.remote and not tier.priced and all(supported.values()):  # nothing to check per row
            return [Group(i) for i in pending], skipped
        groups: list[Group] = []
        by_key: dict[str, Group] = {}
        keyed = backend.remote and self.cache is not None
        for i in pending:
            row = rows[i]
            reason = None
            if not supported[batch.tasks[i]]:
                reason = "unsupported"
            elif backend.remote and batch.private[i]:
                reason = "privacy"
            elif tier.priced and row.price_floor is not None and (local_only and backend.remote or tier.price_per_mtok >= row.price_floor):
                reason = "budget"
            if reason is not None:
                row.skip(tier, reason)
                skipped[reason] += 1
                continue
            if not keyed:
                groups.append(Group(i))
                continue
            spec = self.tasks[batch.tasks[i]]
            key = cache_key(spec.name, spec.config.prompt_version, backend.model, batch.texts[i])
            group = by_key.get(key)
            if group is None:
                group = by_key[key] = Group(i, key)
                groups.append(group)
            else:
                group.follow(i)
        return groups, skipped

    # -- per wave ------------------------------------------------------------------
    def admit(self, tier: Tier, groups: list[Group], batch: BatchInputs, *, last_wave: bool) -> Plan:
        plan = Plan()
        todo = groups
        if self.cache is not None and tier.backend.remote:
            hits = self.cache.get_many({g.cache_key for g in groups if g.cache_key is not None})
            todo = []
            for g in groups:
                hit = hits.get(g.cache_key) if g.cache_key is not None else None
                following = self.inflight.peek(g.cache_key) if hit is None and g.cache_key is not None else None
                if hit is not None:
                    plan.hits.append((g, hit, g.cache_key, 1.0))
                elif following is not None:
                    plan.follow.append((g, following))
                else:
                    todo.append(g)
            if self.near is not None and todo:
                todo = self._near_duplicates(tier, todo, batch, plan)
        if tier.priced and self.budgets.enabled:
            todo = self._reserve(tier, todo, batch, plan, last_wave)
        if self.cache is None or not tier.backend.remote:  # no cache keys: every group is sent
            plan.send = todo
            return plan
        for g in todo:
            if g.cache_key is None:
                plan.send.append(g)
                continue
            lead, pending = self.inflight.lead_or_follow(g.cache_key)
            if lead:
                g.pending = pending
                plan.send.append(g)
            else:  # another batch sent it meanwhile
                if g.reservation is not None:
                    self.budgets.settle(g.reservation, 0.0)
                    g.reservation = None
                plan.follow.append((g, pending))
        return plan

    def _near_duplicates(self, tier: Tier, groups: list[Group], batch: BatchInputs, plan: Plan) -> list[Group]:
        """Groups answered by a near-duplicate's cached answer go to ``plan.hits``; returns the others."""
        assert self.near is not None and self.cache is not None
        model = tier.backend.model
        matches = {}
        refused = 0
        for g in groups:
            spec = self.tasks[batch.tasks[g.lead]]
            m = self.near.lookup(namespace(spec.name, spec.config.prompt_version, model), batch.texts[g.lead])
            if m is not None and m.key is not None:
                matches[id(g)] = m
            elif m is not None:
                refused += 1
        answers = self.cache.get_many({m.key for m in matches.values() if m.key is not None}) if matches else {}
        rest = []
        for g in groups:
            m = matches.get(id(g))
            hit = answers.get(m.key) if m is not None and m.key is not None else None
            if m is not None and hit is not None:
                plan.hits.append((g, hit, m.key, m.similarity))
            else:
                rest.append(g)
        if refused:
            metrics.NEAR_DUPLICATES.labels(tier=tier.name, outcome="refused").inc(refused)
        if len(rest) < len(groups):
            metrics.NEAR_DUPLICATES.labels(tier=tier.name, outcome="hit").inc(len(groups) - len(rest))
        return rest

    def _reserve(self, tier: Tier, groups: list[Group], batch: BatchInputs, plan: Plan, last_wave: bool) -> list[Group]:
        """Reserve each group's estimated cost; returns the groups that fit."""
        admitted: list[Group] = []
        todo = groups
        while todo:
            leaders = [g.lead for g in todo]
            decisions = self.budgets.reserve([(batch.tenants[i], batch.sources[i], self.estimate(tier, batch.tasks[i], batch.texts[i])) for i in leaders])
            held = {sk for d in decisions if isinstance(d, Reservation) for sk in d.scopes()}
            retry: list[Group] = []
            for g, d in zip(todo, decisions):
                if isinstance(d, Reservation):
                    g.reservation = d
                    admitted.append(g)
                elif not last_wave and (d.scope, d.key) in held:
                    plan.deferred.append(g)  # this batch's own reservations are in the way: wait for them
                else:
                    # refused, and so is every identical row of the same tenant and source;
                    # the others have their own budgets and try again
                    payer = (batch.tenants[g.lead], batch.sources[g.lead])
                    others = [i for i in g.rows if (batch.tenants[i], batch.sources[i]) != payer]
                    plan.refused.extend((i, d) for i in g.rows if (batch.tenants[i], batch.sources[i]) == payer)
                    if others:
                        retry.append(Group(others[0], g.cache_key, others[1:] or None))
            if admitted and not last_wave:
                plan.deferred.extend(retry)
                break
            todo = retry
        return admitted

    def estimate(self, tier: Tier, task: str, text: str) -> float:
        """The cost reserved before ``text`` goes to ``tier``: estimated prompt tokens plus the
        learned output estimate (capped by ``max_output_tokens``)."""
        cap = tier.backend.config.max_output_tokens
        return call_cost(
            self.config.pricing,
            tier.backend.model,
            input_tokens=estimate_tokens(self.prompt_chars[task] + len(text), self.config.chars_per_token),
            output_tokens=self.estimator.estimate(task, tier.name, cap),
        )
