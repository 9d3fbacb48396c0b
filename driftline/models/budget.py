"""Daily budgets per tenant and per source.

Before a request goes to a priced tier its estimated cost is reserved against the
tenant's and the source's budget of the current UTC day; if either would be exceeded
the tier is skipped (reason ``budget``) and a :class:`BudgetEvent` is emitted the first
time that scope runs out that day.  After the call the reservation is replaced by the
actual cost.  Spend is persisted by the call ledger, so a restart resumes the day's
totals.

>>> from driftline.config.models import BudgetConfig
>>> from driftline.clock import FakeClock
>>> t = BudgetTracker(BudgetConfig(per_tenant_daily_usd={"acme": 0.01}), FakeClock())
>>> t.reserve("acme", "s", 0.006, tier="primary") is None
True
>>> t.reserve("acme", "s", 0.006, tier="primary")
'tenant_daily_budget_exhausted'
>>> t.drain_events()[0].scope
'tenant'
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime

import polars as pl

from driftline.clock import Clock, SystemClock
from driftline.config.models import BudgetConfig

BUDGET_EVENT_SCHEMA: dict[str, pl.DataType] = {
    "at": pl.Datetime("ms", "UTC"),
    "day": pl.Utf8,
    "scope": pl.Utf8,
    "key": pl.Utf8,
    "limit_usd": pl.Float64,
    "spent_usd": pl.Float64,
    "tier": pl.Utf8,
    "action": pl.Utf8,
}


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A budget ran out: ``scope`` is tenant or source, ``key`` its name."""

    at: datetime
    day: str
    scope: str
    key: str
    limit_usd: float
    spent_usd: float
    tier: str
    action: str


def budget_events_frame(events: list[BudgetEvent]) -> pl.DataFrame:
    """Events as a frame with :data:`BUDGET_EVENT_SCHEMA` (for the alerts path)."""
    if not events:
        return pl.DataFrame(schema=BUDGET_EVENT_SCHEMA)
    return pl.DataFrame([asdict(e) for e in events], schema=BUDGET_EVENT_SCHEMA)


@dataclass(slots=True)
class BudgetTracker:
    config: BudgetConfig
    clock: Clock = field(default_factory=SystemClock)
    spent: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    _announced: set[tuple[str, str, str]] = field(default_factory=set)
    _events: list[BudgetEvent] = field(default_factory=list)

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

    def load(self, day: str, totals: dict[tuple[str, str], float]) -> None:
        """Resume a day's spend (from the ledger)."""
        for (scope, key), usd in totals.items():
            self.spent[(day, scope, key)] = max(self.spent.get((day, scope, key), 0.0), usd)

    def reserve(self, tenant: str | None, source: str | None, usd: float, *, tier: str) -> str | None:
        """Reserve ``usd`` against both budgets: None if done, else why not (and maybe an event)."""
        day = self.day()
        scopes = (("tenant", tenant or ""), ("source", source or ""))
        for scope, key in scopes:
            lim = self.limit(scope, key)
            if lim is None:
                continue
            spent = self.spent.get((day, scope, key), 0.0)
            if spent + usd > lim + 1e-12:
                if (day, scope, key) not in self._announced:
                    self._announced.add((day, scope, key))
                    action = "route:" + ("local" if self.config.on_exhausted == "local" else "next_tier")
                    self._events.append(BudgetEvent(self.clock.now(), day, scope, key, lim, round(spent, 10), tier, action))
                return f"{scope}_daily_budget_exhausted"
        for scope, key in scopes:
            self.spent[(day, scope, key)] = self.spent.get((day, scope, key), 0.0) + usd
        return None

    def settle(self, tenant: str | None, source: str | None, reserved: float, actual: float) -> None:
        """Replace a reservation by the actual cost."""
        day = self.day()
        for scope, key in (("tenant", tenant or ""), ("source", source or "")):
            k = (day, scope, key)
            self.spent[k] = max(0.0, self.spent.get(k, 0.0) - reserved + actual)

    def drain_events(self) -> list[BudgetEvent]:
        out, self._events = self._events, []
        return out
