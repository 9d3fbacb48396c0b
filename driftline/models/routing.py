"""Routing strategies: which tiers a row tries, in which order, and why.

A strategy is one small registered class: given a task and the tiers of the chain (the
closing rules tier excluded: it always comes last), it returns the route and a reason
code.  The service routes each task of a batch once, records the route's first tier
(``model_route``) and the reason (``model_route_reason``) on every row, and counts
``driftline_model_routes_total{tier,reason}``.

- ``chain`` (default): the configured order; reason ``chain``.
- ``cost``: the healthy tiers whose declared ``capabilities`` include the task,
  cheapest first (input + output list price; equal prices keep the chain order);
  reason ``cheapest``, or ``cheapest_healthy`` when a cheaper tier was left out as
  unhealthy.
- ``latency``: the healthy capable tiers by a moving percentile of their request
  latencies, fastest first; a tier with too few recent observations goes first
  (reason ``exploring``), otherwise ``fastest``.
- ``health``: the chain order without the unhealthy tiers; ``healthy`` when the
  chain's first tier leads, ``skip_unhealthy`` when it was left out.

A tier is unhealthy when its circuit breaker is open or its error rate over the last
``health_window_s`` is above ``error_rate_threshold`` (with at least ``min_samples``
outcomes).  When no tier is left the route is the closing rules tier alone (reason
``none_healthy``).  Health and latency are what this process observed.

Adding a strategy::

    @register_strategy("first_remote")
    class FirstRemote(RoutingStrategy):
        def route(self, task, tiers):
            remote = [t for t in tiers if t.backend.remote]
            return remote + [t for t in tiers if not t.backend.remote], "remote_first"

>>> from driftline.config.models import ModelsConfig
>>> from driftline.models import ModelService
>>> svc = ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}, "routing": {"strategy": "cost"}}))
>>> route, reason = svc.router.route(svc.tasks["sentiment"])
>>> [t.name for t in route], reason
(['local', 'rules'], 'cheapest')
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

from driftline.clock import Clock, SystemClock
from driftline.config.models import RoutingConfig
from driftline.models.base import add_registered
from driftline.models.prompts import TaskSpec
from driftline.models.resilience import CircuitState
from driftline.models.rows import Tier


class TierHealth:
    """What this process saw of one tier lately: outcomes per ``health_window_s`` and
    the latencies of its last ``latency_window`` answers (thread-safe)."""

    def __init__(self, config: RoutingConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._outcomes: deque[tuple[float, int, int]] = deque()  # (at, ok, failed)
        self._latencies: deque[tuple[float, float]] = deque(maxlen=config.latency_window)  # (at, ms)

    def observe(self, ok: int, failed: int, latencies_ms: Sequence[float] = ()) -> None:
        now = self.clock.now().timestamp()
        with self._lock:
            if ok or failed:
                self._outcomes.append((now, ok, failed))
            self._latencies.extend((now, ms) for ms in latencies_ms)

    def _expire(self, now: float) -> None:
        horizon = now - self.config.health_window_s
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()
        while self._latencies and self._latencies[0][0] < horizon:
            self._latencies.popleft()

    def error_rate(self) -> tuple[float, int]:
        """Share of failed requests over the window, and how many outcomes it covers."""
        with self._lock:
            self._expire(self.clock.now().timestamp())
            ok = sum(o for _, o, _ in self._outcomes)
            failed = sum(f for _, _, f in self._outcomes)
        n = ok + failed
        return (failed / n if n else 0.0), n

    def latency(self, percentile: float) -> tuple[float, int]:
        """The ``percentile`` of recent latencies in ms (nearest rank), and how many there are."""
        with self._lock:
            self._expire(self.clock.now().timestamp())
            values = sorted(ms for _, ms in self._latencies)
        if not values:
            return 0.0, 0
        return values[max(0, math.ceil(percentile / 100.0 * len(values)) - 1)], len(values)


class RoutingStrategy(ABC):
    """Orders the tiers a row tries (see the module doc); a small registered class."""

    name: ClassVar[str] = ""

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config

    @abstractmethod
    def route(self, task: TaskSpec, tiers: list[Tier]) -> tuple[list[Tier], str]:
        """The route for rows of ``task`` (a subset of ``tiers`` in any order) and its reason code."""

    # -- helpers for strategies ----------------------------------------------------
    def capable(self, tier: Tier, task: TaskSpec) -> bool:
        """The tier supports the task and, when it declares capabilities, names its name or kind."""
        caps = tier.backend.config.capabilities
        return tier.backend.supports(task) and (caps is None or task.name in caps or task.config.kind in caps)

    def healthy(self, tier: Tier) -> bool:
        """Breaker not open and recent error rate not above the threshold."""
        breaker = tier.backend.breaker
        if breaker is not None and breaker.state is CircuitState.OPEN:
            return False
        if tier.health is None:
            return True
        rate, n = tier.health.error_rate()
        return n < self.config.min_samples or rate <= self.config.error_rate_threshold


S = TypeVar("S", bound=type[RoutingStrategy])

STRATEGIES: dict[str, type[RoutingStrategy]] = {}


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator registering a routing strategy under ``name``."""

    def deco(cls: S) -> S:
        add_registered(STRATEGIES, name, cls, "routing strategy")
        cls.name = name
        return cls

    return deco


@register_strategy("chain")
class ChainStrategy(RoutingStrategy):
    """The configured chain, in order."""

    def route(self, task: TaskSpec, tiers: list[Tier]) -> tuple[list[Tier], str]:
        return tiers, "chain"


@register_strategy("cost")
class CostStrategy(RoutingStrategy):
    """Cheapest healthy capable tier first."""

    def route(self, task: TaskSpec, tiers: list[Tier]) -> tuple[list[Tier], str]:
        capable = [t for t in tiers if self.capable(t, task)]
        healthy = sorted((t for t in capable if self.healthy(t)), key=lambda t: t.price_per_mtok)  # stable: ties keep the chain order
        if not healthy:
            return [], "none_healthy"
        cheapest = min(t.price_per_mtok for t in capable)
        return healthy, "cheapest" if healthy[0].price_per_mtok <= cheapest else "cheapest_healthy"


@register_strategy("latency")
class LatencyStrategy(RoutingStrategy):
    """Lowest moving latency percentile first; tiers without enough observations are tried first."""

    def route(self, task: TaskSpec, tiers: list[Tier]) -> tuple[list[Tier], str]:
        healthy = [t for t in tiers if self.capable(t, task) and self.healthy(t)]
        if not healthy:
            return [], "none_healthy"
        seen = {t.name: t.health.latency(self.config.latency_percentile) if t.health is not None else (0.0, 0) for t in healthy}
        cold = [t for t in healthy if seen[t.name][1] < self.config.min_samples]
        warm = sorted((t for t in healthy if seen[t.name][1] >= self.config.min_samples), key=lambda t: seen[t.name][0])
        return cold + warm, "exploring" if cold else "fastest"


@register_strategy("health")
class HealthStrategy(RoutingStrategy):
    """The chain order without the unhealthy tiers."""

    def route(self, task: TaskSpec, tiers: list[Tier]) -> tuple[list[Tier], str]:
        healthy = [t for t in tiers if self.healthy(t)]
        if not healthy:
            return [], "none_healthy"
        return healthy, "healthy" if healthy[0] is tiers[0] else "skip_unhealthy"


class Router:
    """Routes the tasks of a batch with the configured strategy; the closing rules tier ends every route."""

    def __init__(self, config: RoutingConfig, tiers: list[Tier]) -> None:
        cls = STRATEGIES.get(config.strategy)
        if cls is None:
            raise ValueError(f"models.routing.strategy: unknown strategy {config.strategy!r} (registered: {sorted(STRATEGIES)})")
        self.strategy = cls(config)
        self.candidates = tiers[:-1]
        self.closing = tiers[-1]
        self.fixed = cls is ChainStrategy  # the same route every time: nothing to compute per batch

    def route(self, task: TaskSpec) -> tuple[list[Tier], str]:
        route, reason = self.strategy.route(task, list(self.candidates))
        return [*route, self.closing], reason
