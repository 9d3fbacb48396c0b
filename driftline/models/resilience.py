"""Resilience around one backend: error classification, retries with backoff, circuit breaker.

>>> classify_status(429, b'{"error": {"code": "insufficient_quota"}}')
'quota'
>>> classify_status(503, b'')
'server_error'
>>> parse_retry_after("2")
2.0
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import TypeVar

import httpx

from driftline.clock import Clock, SystemClock
from driftline.config.models import CircuitConfig, RetryConfig
from driftline.models.types import BREAKER_FAILURES, RETRYABLE, ModelCallError

T = TypeVar("T")


def classify_status(status: int, body: bytes = b"") -> str:
    """Error class of an HTTP error status (and body, to tell quota from rate limiting)."""
    lowered = body[:2000].lower()
    if status == 429:
        if b"insufficient_quota" in lowered or b"quota_exceeded" in lowered:
            return "quota"
        return "rate_limit"
    if status == 402:
        return "quota"
    if status in (401, 403):
        return "auth_error"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "bad_request"  # 400, 404, 422...: the request itself is refused; retrying cannot help


def classify_exception(exc: BaseException) -> str:
    """Error class of a transport exception raised by httpx."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return "network"
    if isinstance(exc, httpx.TransportError):
        return "network"
    return "internal"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, policy: RetryConfig, rng: random.Random, retry_after_s: float | None = None) -> float:
    """Delay before retry number ``attempt`` (1 = first retry): exponential, capped, jittered.

    A provider's Retry-After is a floor: the delay is never shorter than it asked.
    """
    base = min(policy.max_delay_s, policy.base_delay_s * policy.multiplier ** (attempt - 1))
    delay = base * rng.uniform(1.0 - policy.jitter, 1.0 + policy.jitter)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


class CircuitState(Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open after a cool-down -> closed after M successes.

    Thread-safe; time comes from the injected clock.  ``on_change`` is called with the new
    state (the metrics gauge hooks in there).

    >>> from driftline.clock import FakeClock
    >>> clock = FakeClock()
    >>> b = CircuitBreaker(CircuitConfig(failure_threshold=2, cooldown_s=10, half_open_successes=1), clock)
    >>> b.record_failure(); b.record_failure(); b.state.name
    'OPEN'
    >>> b.allow()
    False
    >>> _ = clock.advance(10); b.allow(), b.state.name
    (True, 'HALF_OPEN')
    >>> b.record_success(); b.state.name
    'CLOSED'
    """

    def __init__(self, config: CircuitConfig, clock: Clock | None = None, on_change: Callable[[CircuitState], None] | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at: datetime | None = None
        if on_change:
            on_change(self._state)

    @property
    def state(self) -> CircuitState:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change:
                self._on_change(state)

    def _maybe_half_open(self) -> None:
        if self._state is CircuitState.OPEN and self._opened_at is not None:
            if (self.clock.now() - self._opened_at).total_seconds() >= self.config.cooldown_s:
                self._successes = 0
                self._set(CircuitState.HALF_OPEN)

    def allow(self) -> bool:
        """May a request go out now?  Moves open -> half-open once the cool-down has passed."""
        with self._lock:
            self._maybe_half_open()
            return self._state is not CircuitState.OPEN

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            if self._state is CircuitState.HALF_OPEN:
                self._successes += 1
                if self._successes >= self.config.half_open_successes:
                    self._successes = 0
                    self._opened_at = None
                    self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._maybe_half_open()
            if self._state is CircuitState.HALF_OPEN:
                self._open()
                return
            if self._state is CircuitState.OPEN:
                return
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open()

    def _open(self) -> None:
        self._opened_at = self.clock.now()
        self._failures = 0
        self._successes = 0
        self._set(CircuitState.OPEN)


@dataclass(slots=True)
class Attempted:
    """Outcome of :func:`call_with_retries`: the value (or the last error), how many retries
    went out and how many requests in all (``attempts``; 0 when the breaker refused the first)."""

    value: object | None
    error: ModelCallError | None
    retries: int
    attempts: int = 0


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryConfig,
    breaker: CircuitBreaker | None = None,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[str], None] | None = None,
    before_attempt: Callable[[], None] | None = None,
) -> Attempted:
    """Run ``fn`` until it succeeds, fails with a non-retryable class, or attempts run out.

    ``fn`` raises :class:`ModelCallError` on a classified failure.  Retryable classes
    (timeout, network, rate_limit, server_error) are retried after :func:`backoff_delay`,
    honouring Retry-After up to ``policy.max_retry_after_s``.  The breaker is consulted
    before every attempt (open -> ``circuit_open`` without calling) and told every outcome.
    ``before_attempt`` runs first before every attempt (the rate limits' permit: it waits
    for room, or raises :class:`ModelCallError` and the request fails with that class,
    or with the previous attempt's when there was one).
    """
    rng = rng or random.Random()
    retries = 0
    last: ModelCallError | None = None
    for attempt in range(policy.max_attempts):
        if before_attempt is not None:
            try:
                before_attempt()
            except ModelCallError as exc:
                return Attempted(None, last or exc, retries, attempt)
        if breaker is not None and not breaker.allow():
            return Attempted(None, last or ModelCallError("circuit_open", "circuit breaker is open"), retries, attempt)
        if attempt:  # a retry is counted when it really goes out, not when it is planned
            retries += 1
            if on_retry and last is not None:
                on_retry(last.error_class)
        try:
            value = fn()
        except ModelCallError as exc:
            last = exc
            if breaker is not None:
                if exc.error_class in BREAKER_FAILURES:
                    breaker.record_failure()
                elif exc.error_class == "bad_output":
                    breaker.record_success()  # the provider answered; the answer was unusable
            if exc.error_class not in RETRYABLE or attempt + 1 >= policy.max_attempts:
                return Attempted(None, exc, retries, attempt + 1)
            if exc.retry_after_s is not None and exc.retry_after_s > policy.max_retry_after_s:
                return Attempted(None, exc, retries, attempt + 1)
            sleep(backoff_delay(attempt + 1, policy, rng, exc.retry_after_s))
            continue
        if breaker is not None:
            breaker.record_success()
        return Attempted(value, None, retries, attempt + 1)
    return Attempted(None, last, retries, policy.max_attempts)
