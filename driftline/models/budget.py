"""Daily budgets per tenant and per source: settled spend plus reservations.

Before a request goes to a priced tier its estimated cost is reserved against the
tenant's and the source's budget of the current UTC day.  A request fits when the
day's *settled* spend plus every *reservation* still in flight (this process's and,
through the call ledger, every other process's) plus its own estimate stays within the
limit.  When the answer arrives the reservation is replaced by the actual cost at once.
A request that does not fit is refused (the tier is skipped, reason ``budget``) and a
:class:`BudgetEvent` is emitted the first time that scope is refused that day; its
figures say whether the settled spend alone left no room (``cause`` ``settled``) or
the reservations in flight did (``reserved``).  With a ledger, settled spend and
reservations live in it, so every worker and process of a host admits against the same
totals and a restart resumes the day's spend.

>>> from driftline.config.models import BudgetConfig
>>> from driftline.clock import FakeClock
>>> t = BudgetTracker(BudgetConfig(per_tenant_daily_usd={"acme": 0.01}), FakeClock())
>>> first, second = t.reserve([("acme", "s", 0.006), ("acme", "s", 0.006)])
>>> first.usd, second.reason, second.cause
(0.006, 'tenant_daily_budget_exhausted', 'reserved')
>>> t.settle(first, 0.001); t.reserve([("acme", "s", 0.006)])[0].usd
0.006
>>> t.refused(second, tier="primary"); t.drain_events()[0].reserved_usd
0.006
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import polars as pl

from driftline.clock import Clock, SystemClock
from driftline.config.models import BudgetConfig
from driftline.models.ledger import CallLedger, DayScopeKey, ScopeKey

EPS = 1e-12

BUDGET_EVENT_SCHEMA: dict[str, pl.DataType] = {
    "at": pl.Datetime("ms", "UTC"),
    "day": pl.Utf8,
    "scope": pl.Utf8,
    "key": pl.Utf8,
    "limit_usd": pl.Float64,
    "spent_usd": pl.Float64,
    "reserved_usd": pl.Float64,
    "request_usd": pl.Float64,
    "cause": pl.Utf8,
    "tier": pl.Utf8,
    "action": pl.Utf8,
}


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A budget refused a request: ``scope`` is tenant or source, ``key`` its name.

    ``spent_usd`` is the settled spend, ``reserved_usd`` the reservations in flight and
    ``request_usd`` the refused request's estimate; ``cause`` is ``settled`` when the
    settled spend alone left no room for it, else ``reserved``.
    """

    at: datetime
    day: str
    scope: str
    key: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    request_usd: float
    cause: str
    tier: str
    action: str


def budget_events_frame(events: list[BudgetEvent]) -> pl.DataFrame:
    """Events as a frame with :data:`BUDGET_EVENT_SCHEMA` (for the alerts path)."""
    if not events:
        return pl.DataFrame(schema=BUDGET_EVENT_SCHEMA)
    return pl.DataFrame([asdict(e) for e in events], schema=BUDGET_EVENT_SCHEMA)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside for one request in flight (against both of its scopes)."""

    day: str
    tenant: str
    source: str
    usd: float

    def scopes(self) -> tuple[ScopeKey, ScopeKey]:
        return ("tenant", self.tenant), ("source", self.source)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request did not fit: the first scope whose limit it would cross."""

    day: str
    scope: str
    key: str
    limit_usd: float
    settled_usd: float
    reserved_usd: float
    request_usd: float

    @property
    def reason(self) -> str:
        return f"{self.scope}_daily_budget_exhausted"

    @property
    def cause(self) -> str:
        return "settled" if self.settled_usd + self.request_usd > self.limit_usd + EPS else "reserved"


class BudgetTracker:
    """Reservations and settlements of one process; totals shared through ``ledger`` (thread-safe)."""

    def __init__(self, config: BudgetConfig, clock: Clock | None = None, ledger: CallLedger | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.ledger = ledger
        self._lock = threading.RLock()
        self._own: dict[DayScopeKey, float] = defaultdict(float)  # this process's reservations in flight
        self._settled: dict[DayScopeKey, float] = defaultdict(float)  # settled spend when there is no ledger
        self._settling: dict[DayScopeKey, float] = defaultdict(float)  # settled, not yet committed to the ledger
        self._announced: set[DayScopeKey] = set()
        self._events: list[BudgetEvent] = []

    @property
    def enabled(self) -> bool:
        c = self.config
        return bool(c.per_tenant_daily_usd or c.per_source_daily_usd or c.default_tenant_daily_usd is not None or c.default_source_daily_usd is not None)

    def day(self) -> str:
        return self.clock.now().strftime("%Y-%m-%d")

    def limit(self, scope: str, key: str) -> float | None:
        c = self.config
        if scope == "tenant":
            return c.per_tenant_daily_usd.get(key, c.default_tenant_daily_usd)
        return c.per_source_daily_usd.get(key, c.default_source_daily_usd)

    @property
    def spent(self) -> dict[DayScopeKey, float]:
        """Today's settled spend per ``(day, scope, key)``."""
        day = self.day()
        if self.ledger is not None:
            return {(day, s, k): usd for (s, k), usd in self.ledger.spend(day).items()}
        with self._lock:
            return {k: v for k, v in self._settled.items() if k[0] == day}

    # -- admission -----------------------------------------------------------------
    def reserve(self, requests: Sequence[tuple[str | None, str | None, float]]) -> list[Reservation | Refusal]:
        """Reserve ``(tenant, source, usd)`` requests in order; each one fits entirely or is refused."""
        day = self.day()
        limited = {sk for t, s, _ in requests for sk in (("tenant", t or ""), ("source", s or "")) if self.limit(*sk) is not None}
        decided: list[Reservation | Refusal] = []
        with self._lock:
            if self.ledger is None:
                settled = {sk: self._settled.get((day, *sk), 0.0) for sk in limited}
                decided, added = self._decide(day, requests, settled, {})
                self._apply(day, added)
                return decided
            if not limited:
                return [Reservation(day, t or "", s or "", usd) for t, s, usd in requests]
            result: list[tuple[list[Reservation | Refusal], dict[ScopeKey, float]]] = []

            def decide(settled: dict[ScopeKey, float], others: dict[ScopeKey, float]) -> dict[DayScopeKey, float]:
                # costs settled here but still on their way into the ledger count as spent
                for sk in limited:
                    settled[sk] = settled.get(sk, 0.0) + self._settling.get((day, *sk), 0.0)
                got, added = self._decide(day, requests, settled, others)
                result.append((got, added))
                return {(day, *sk): self._own.get((day, *sk), 0.0) + usd for sk, usd in added.items()}

            now = self.clock.now().timestamp()
            self.ledger.reserve(day, limited, decide, now=now, live_after=now - self.config.reservation_lease_s)
            decided, added = result[-1]
            self._apply(day, added)  # only once the reservations are published
            return decided

    def _decide(
        self, day: str, requests: Sequence[tuple[str | None, str | None, float]], settled: dict[ScopeKey, float], others: dict[ScopeKey, float]
    ) -> tuple[list[Reservation | Refusal], dict[ScopeKey, float]]:
        added: dict[ScopeKey, float] = defaultdict(float)
        out: list[Reservation | Refusal] = []
        for tenant, source, usd in requests:
            res = Reservation(day, tenant or "", source or "", usd)
            refusal = None
            for sk in res.scopes():
                lim = self.limit(*sk)
                if lim is None:
                    continue
                done = settled.get(sk, 0.0)
                held = others.get(sk, 0.0) + self._own.get((day, *sk), 0.0) + added.get(sk, 0.0)
                if done + held + usd > lim + EPS:
                    refusal = Refusal(day, sk[0], sk[1], lim, round(done, 10), round(held, 10), usd)
                    break
            if refusal is not None:
                out.append(refusal)
                continue
            for sk in res.scopes():
                if self.limit(*sk) is not None:
                    added[sk] += usd
            out.append(res)
        return out, added

    def _apply(self, day: str, added: dict[ScopeKey, float]) -> None:
        for sk, usd in added.items():
            self._own[(day, *sk)] += usd

    # -- settlement ------------------------------------------------------------------
    def settle(self, reservation: Reservation, actual: float) -> None:
        """Replace a reservation by the actual cost (0 releases it).  With a ledger the
        caller records the cost in the answer's transaction, then calls :meth:`recorded`;
        until then this process counts it as spent itself."""
        with self._lock:
            for sk in reservation.scopes():
                k = (reservation.day, *sk)
                if k in self._own:
                    left = self._own[k] - reservation.usd
                    if left > EPS:
                        self._own[k] = left
                    else:
                        del self._own[k]
                if self.ledger is None:
                    self._settled[k] += actual
                elif actual and self.limit(*sk) is not None:
                    self._settling[k] += actual

    def recorded(self, settled: Sequence[tuple[Reservation, float]]) -> None:
        """The costs of :meth:`settle` are in the ledger: stop counting them here and
        publish this process's lower reservation totals to the other processes."""
        if self.ledger is None or not settled:
            return
        with self._lock:
            totals: dict[DayScopeKey, float] = {}
            for r, actual in settled:
                for sk in r.scopes():
                    if self.limit(*sk) is None:
                        continue
                    k = (r.day, *sk)
                    left = self._settling.get(k, 0.0) - actual
                    if left > EPS:
                        self._settling[k] = left
                    else:
                        self._settling.pop(k, None)
                    totals[k] = self._own.get(k, 0.0)
            if totals:
                self.ledger.publish_reserved(totals, now=self.clock.now().timestamp())

    # -- events -------------------------------------------------------------------
    def refused(self, refusal: Refusal, *, tier: str) -> None:
        """A request was finally refused: emit the scope's event once per day."""
        k = (refusal.day, refusal.scope, refusal.key)
        with self._lock:
            if k in self._announced:
                return
            self._announced.add(k)
            action = "route:" + ("local" if self.config.on_exhausted == "local" else "next_tier")
            self._events.append(
                BudgetEvent(
                    self.clock.now(), refusal.day, refusal.scope, refusal.key, refusal.limit_usd,
                    refusal.settled_usd, refusal.reserved_usd, refusal.request_usd, refusal.cause, tier, action,
                )
            )

    def drain_events(self) -> list[BudgetEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out
