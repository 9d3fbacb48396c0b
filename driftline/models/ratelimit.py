"""Rate limits enforced before a request is sent, and the pause a provider's 429 asks for.

Every remote tier has a :class:`TierGate`.  Before each attempt of a request (retries
and corrective retries count: the provider sees every one) the request's
:class:`Permit` takes its room from the limits that apply to it: the tier's requests
and tokens per minute (``backends.<tier>.rate_limit``) and its tenant's
(``rate_limits.per_tenant`` / ``default_tenant``).  A limit is a *paced* schedule
(GCRA without burst): a limit of ``N`` per minute lets a request go
``60 / N`` seconds after the previous one, so the provider never sees more than ``N``
in any minute, and a request of ``t`` tokens holds a tokens-per-minute limit for
``t · 60 / N`` seconds.  ``rate_limits.headroom`` (2 %) of every limit is left unused:
requests are paced by when they leave and counted by the provider when they arrive.  Tokens are estimated before the call (prompt characters /
``chars_per_token`` plus the learned output estimate) and corrected from the usage the
provider reports once the request is done.

When a limit has no room, the permit waits until it has (the batch waits, so the
worker stops consuming: backpressure, nothing dropped, nothing reordered), or, for a
task with ``on_rate_limit: next_tier``, fails at once with error class ``throttled`` so
the row moves on to the next tier.  A 429 with ``Retry-After`` pauses the tier: every
permit of every worker and process waits until the pause is over (a pause longer than
``retry.max_retry_after_s`` is not waited for: requests fail as ``rate_limit``).

The schedule lives in a :class:`PacingStore`: in the call ledger (:class:`LedgerPacing`,
one small write transaction per attempt, shared by every worker and process of the
host) or, without a ledger, in memory (:class:`MemoryPacing`, one process).

>>> from driftline.clock import FakeClock
>>> from driftline.config.models import RateLimit, RateLimitsConfig
>>> clock = FakeClock()
>>> waits = []
>>> def sleep(s): waits.append(round(s, 3)); clock.advance(s)
>>> gate = TierGate("primary", RateLimit(requests_per_minute=600), RateLimitsConfig(headroom=0), MemoryPacing(), clock, sleep=sleep)
>>> for _ in range(3): gate.permit(ModelRequest("k", "hi", "sentiment")).acquire()
>>> waits
[0.1, 0.1]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from driftline.clock import Clock, SystemClock
from driftline.config.models import RateLimit, RateLimitsConfig
from driftline.models import metrics
from driftline.models.ledger import CallLedger
from driftline.models.types import ModelCallError, ModelRequest

class PacingStore(Protocol):
    """Where the schedule lives: bucket name -> time (epoch seconds)."""

    def pace(self, buckets: Sequence[str], update: Callable[[dict[str, float]], Mapping[str, float]]) -> None: ...

    def paced(self, buckets: Sequence[str]) -> dict[str, float]: ...


class MemoryPacing:
    """The schedule of one process (no ledger)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: dict[str, float] = {}

    def pace(self, buckets: Sequence[str], update: Callable[[dict[str, float]], Mapping[str, float]]) -> None:
        with self._lock:
            self._at.update(update({b: self._at[b] for b in buckets if b in self._at}))

    def paced(self, buckets: Sequence[str]) -> dict[str, float]:
        with self._lock:
            return {b: self._at[b] for b in buckets if b in self._at}


class LedgerPacing:
    """The schedule in the call ledger: shared by every worker and process that opens it."""

    def __init__(self, ledger: CallLedger) -> None:
        self.ledger = ledger

    def pace(self, buckets: Sequence[str], update: Callable[[dict[str, float]], Mapping[str, float]]) -> None:
        self.ledger.pace(buckets, update)

    def paced(self, buckets: Sequence[str]) -> dict[str, float]:
        return self.ledger.paced(buckets)


class _Limit:
    """One bucket: its name, which limit it is, and the seconds one unit holds it."""

    __slots__ = ("bucket", "kind", "interval")

    def __init__(self, bucket: str, kind: str, per_minute: float, share: float) -> None:
        self.bucket = bucket
        self.kind = kind
        self.interval = 60.0 / (per_minute * share)


def _limits(prefix: str, scope: str, limit: RateLimit, share: float) -> tuple[_Limit | None, _Limit | None]:
    rpm = _Limit(f"{prefix}/requests", f"{scope}_requests", limit.requests_per_minute, share) if limit.requests_per_minute else None
    tpm = _Limit(f"{prefix}/tokens", f"{scope}_tokens", limit.tokens_per_minute, share) if limit.tokens_per_minute else None
    return rpm, tpm


class TierGate:
    """Rate limits and the Retry-After pause of one remote tier (thread-safe).

    ``on_limit(task)`` says what a request of ``task`` does when a limit has no room:
    ``wait`` (default) or ``next_tier``.
    """

    def __init__(
        self,
        tier: str,
        limit: RateLimit,
        tenants: RateLimitsConfig,
        store: PacingStore,
        clock: Clock | None = None,
        *,
        max_pause_s: float = 30.0,
        on_limit: Callable[[str], str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.tier = tier
        self.tenants = tenants
        self.store = store
        self.clock = clock or SystemClock()
        self.max_pause_s = max_pause_s
        self.on_limit = on_limit or (lambda task: "wait")
        self.sleep = sleep
        self.share = (1.0 - tenants.headroom) / tenants.hosts  # of every limit, for this ledger's processes
        self.requests, self.tokens = _limits(f"tier/{tier}", "tier", limit, self.share)
        self.pause_bucket = f"pause/{tier}"
        self._tenant_limits: dict[str, tuple[_Limit | None, _Limit | None]] = {}
        self._pause_seen = (float("-inf"), 0.0)  # (read at, paused until), for tiers without limits
        self._lock = threading.Lock()

    @property
    def limits_tokens(self) -> bool:
        """Whether requests need a token estimate (a tokens-per-minute limit may apply)."""
        t = self.tenants
        return self.tokens is not None or t.default_tenant.tokens_per_minute is not None or any(v.tokens_per_minute for v in t.per_tenant.values())

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _tenant(self, tenant: str | None) -> tuple[_Limit | None, _Limit | None]:
        name = tenant or ""
        with self._lock:
            got = self._tenant_limits.get(name)
            if got is None:
                limit = self.tenants.per_tenant.get(name, self.tenants.default_tenant)
                got = self._tenant_limits[name] = _limits(f"tenant/{name}", "tenant", limit, self.share)
        return got

    def permit(self, request: ModelRequest) -> Permit:
        """The permit of one request (all its attempts)."""
        rpm, tpm = self._tenant(request.tenant)
        per_request = [x for x in (self.requests, rpm) if x is not None]
        per_token = [x for x in (self.tokens, tpm) if x is not None]
        return Permit(self, per_request, per_token, max(1, request.tokens), self.on_limit(request.task) == "next_tier")

    # -- the pause ---------------------------------------------------------------
    def pause(self, seconds: float) -> None:
        """A 429 asked to wait ``seconds``: nobody sends to this tier before then."""
        until = self._now() + seconds
        self.store.pace([self.pause_bucket], lambda s: {self.pause_bucket: until} if s.get(self.pause_bucket, 0.0) < until else {})
        with self._lock:
            self._pause_seen = (float("-inf"), 0.0)  # read it again
        metrics.RATE_PAUSES.labels(tier=self.tier).inc()

    def paused_until(self) -> float:
        """The pause in force (read from the store at most every ``pause_refresh_ms``)."""
        now = self._now()
        with self._lock:
            read_at, until = self._pause_seen
            if now - read_at < self.tenants.pause_refresh_ms / 1000.0:
                return until
        until = self.store.paced([self.pause_bucket]).get(self.pause_bucket, 0.0)
        with self._lock:
            self._pause_seen = (now, until)
        return until

    # -- pacing --------------------------------------------------------------------
    def _take(self, per_request: list[_Limit], per_token: list[_Limit], tokens: int, max_wait: float | None) -> tuple[float, str | None]:
        """Take a slot: ``(start time, the limit that set it)``; nothing is taken (start is
        +inf) when the start would be more than ``max_wait`` away."""
        now = self._now()
        taken: list[tuple[float, str | None]] = []
        names = [x.bucket for x in (*per_request, *per_token)] + [self.pause_bucket]

        def update(state: dict[str, float]) -> dict[str, float]:
            start, binding = now, None
            for x in (*per_request, *per_token):
                at = state.get(x.bucket, 0.0)
                if at > start:
                    start, binding = at, x.kind
            pause = state.get(self.pause_bucket, 0.0)
            if pause > start:
                start, binding = pause, "pause"
            if max_wait is not None and start - now > max_wait:
                taken.append((float("inf"), binding))
                return {}
            taken.append((start, binding))
            out = {x.bucket: start + x.interval for x in per_request}
            out.update({x.bucket: start + tokens * x.interval for x in per_token})
            return out

        self.store.pace(names, update)
        return taken[-1]

    def correct(self, per_token: list[_Limit], delta_tokens: int) -> None:
        """Tokens billed minus tokens taken: move the token schedules (never before now)."""
        if not per_token or not delta_tokens:
            return
        now = self._now()

        def update(state: dict[str, float]) -> dict[str, float]:
            out = {}
            for x in per_token:
                at = state.get(x.bucket, 0.0)
                moved = at + delta_tokens * x.interval
                out[x.bucket] = moved if delta_tokens > 0 else max(moved, min(at, now))
            return out

        self.store.pace([x.bucket for x in per_token], update)


class Permit:
    """One request's passage through its tier's limits: :meth:`acquire` before each
    attempt, :meth:`settle` with the tokens billed once it is done."""

    __slots__ = ("gate", "per_request", "per_token", "tokens", "next_tier", "taken")

    def __init__(self, gate: TierGate, per_request: list[_Limit], per_token: list[_Limit], tokens: int, next_tier: bool) -> None:
        self.gate = gate
        self.per_request = per_request
        self.per_token = per_token
        self.tokens = tokens
        self.next_tier = next_tier
        self.taken = 0  # tokens taken over all attempts

    def acquire(self) -> None:
        """Wait for room (or raise ``throttled`` for a next_tier task), then return: the
        attempt may go out now.  A pause longer than ``max_retry_after_s`` raises ``rate_limit``."""
        gate = self.gate
        limited = bool(self.per_request or self.per_token)
        max_wait = gate.tenants.next_tier_max_wait_ms / 1000.0 if self.next_tier else None
        while True:
            now = gate._now()
            if not limited:  # only the pause applies: a cached read, no write
                start, binding = max(now, gate.paused_until()), "pause"
                if start - now > (max_wait if max_wait is not None else float("inf")):
                    start = float("inf")
            else:
                start, binding = gate._take(self.per_request, self.per_token, self.tokens, max_wait)
            if start == float("inf"):
                metrics.RATE_THROTTLED.labels(tier=gate.tier, limit=binding or "pause").inc()
                raise ModelCallError("throttled", f"no room under the {binding} limit within {gate.tenants.next_tier_max_wait_ms} ms")
            wait = start - now
            if binding == "pause" and wait > gate.max_pause_s:
                raise ModelCallError("rate_limit", f"tier paused for {wait:.1f}s by Retry-After (more than max_retry_after_s)")
            if wait > 0:
                metrics.RATE_WAITS.labels(tier=gate.tier, limit=binding or "pause").inc()
                metrics.RATE_WAIT_SECONDS.labels(tier=gate.tier, limit=binding or "pause").inc(wait)
                gate.sleep(wait)
            # a pause published while we waited voids the slot: take a new one after it
            if gate.paused_until() <= max(start, now):
                break
        if self.per_token:
            self.taken += self.tokens

    def settle(self, billed_tokens: int) -> None:
        """Correct the token schedules by what the provider billed (all attempts)."""
        if self.taken:
            self.gate.correct(self.per_token, billed_tokens - self.taken)
            self.taken = 0
