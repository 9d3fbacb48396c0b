"""Circuit breaker states, backoff, Retry-After parsing and error classification."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from driftline.clock import FakeClock
from driftline.config.models import CircuitConfig, RetryConfig
from driftline.models import metrics
from driftline.models.resilience import (
    CircuitBreaker,
    CircuitState,
    backoff_delay,
    call_with_retries,
    classify_exception,
    classify_status,
    parse_retry_after,
)
from driftline.models.types import ModelCallError


def test_breaker_goes_through_every_state_as_configured() -> None:
    clock = FakeClock()
    seen: list[CircuitState] = []
    b = CircuitBreaker(CircuitConfig(failure_threshold=3, cooldown_s=30, half_open_successes=2), clock, on_change=seen.append)
    assert b.state is CircuitState.CLOSED
    b.record_failure()
    b.record_failure()
    b.record_success()  # a success resets the consecutive count
    b.record_failure()
    b.record_failure()
    assert b.state is CircuitState.CLOSED and b.allow()
    b.record_failure()  # third consecutive failure
    assert b.state is CircuitState.OPEN and not b.allow()
    clock.advance(29.9)
    assert not b.allow() and b.state is CircuitState.OPEN
    clock.advance(0.1)
    assert b.allow() and b.state is CircuitState.HALF_OPEN
    b.record_failure()  # a failed probe re-opens at once, with a fresh cool-down
    assert b.state is CircuitState.OPEN
    clock.advance(30)
    assert b.state is CircuitState.HALF_OPEN
    b.record_success()
    assert b.state is CircuitState.HALF_OPEN  # needs two successes
    b.record_success()
    assert b.state is CircuitState.CLOSED
    assert seen == [CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_breaker_state_is_a_metric_through_the_backend() -> None:
    from driftline.config.models import BackendConfig
    from driftline.models.openai_compat import OpenAIBackend

    clock = FakeClock()
    cfg = BackendConfig(kind="openai", model="m-metric", base_url="http://127.0.0.1:9/v1", circuit=CircuitConfig(failure_threshold=1, cooldown_s=5))
    backend = OpenAIBackend("tier_metric", cfg, {}, clock)
    gauge = metrics.CIRCUIT_STATE.labels(backend="openai", model="m-metric", tier="tier_metric")
    assert gauge._value.get() == 0
    backend.breaker.record_failure()
    assert gauge._value.get() == 2
    clock.advance(5)
    backend.breaker.allow()
    assert gauge._value.get() == 1
    backend.close()


def test_backoff_is_exponential_capped_jittered_and_floored_by_retry_after() -> None:
    policy = RetryConfig(base_delay_s=1, multiplier=2, max_delay_s=5, jitter=0.25)
    rng = random.Random(1)
    d = [backoff_delay(a, policy, rng) for a in (1, 2, 3, 4, 5)]
    assert 0.75 <= d[0] <= 1.25 and 1.5 <= d[1] <= 2.5 and 3 <= d[2] <= 5
    assert all(x <= 5 * 1.25 for x in d[3:])
    assert backoff_delay(1, policy, rng, retry_after_s=7) == 7


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now) == 10.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, b'{"error":{"code":"rate_limit_exceeded"}}', "rate_limit"),
        (429, b'{"error":{"code":"insufficient_quota"}}', "quota"),
        (500, b"", "server_error"),
        (503, b"", "server_error"),
        (401, b"", "auth_error"),
        (403, b"", "auth_error"),
        (400, b"", "bad_request"),
        (408, b"", "timeout"),
    ],
)
def test_status_classification(status: int, body: bytes, expected: str) -> None:
    assert classify_status(status, body) == expected


def test_exception_classification() -> None:
    req = httpx.Request("POST", "http://x")
    assert classify_exception(httpx.ReadTimeout("t", request=req)) == "timeout"
    assert classify_exception(httpx.ConnectError("c", request=req)) == "network"
    assert classify_exception(httpx.RemoteProtocolError("r", request=req)) == "network"


def test_call_with_retries_stops_on_non_retryable_and_counts_retries() -> None:
    sleeps: list[float] = []
    policy = RetryConfig(max_attempts=4, base_delay_s=0.1, jitter=0)
    errors = iter([ModelCallError("server_error", "x"), ModelCallError("rate_limit", "y", retry_after_s=2.0), ModelCallError("auth_error", "z")])

    def fn() -> str:
        raise next(errors)

    got = call_with_retries(fn, policy, sleep=sleeps.append)
    assert got.error is not None and got.error.error_class == "auth_error"
    assert got.retries == 2
    assert sleeps == [0.1, 2.0]  # second delay is the provider's Retry-After


def test_call_with_retries_gives_up_on_a_too_long_retry_after() -> None:
    policy = RetryConfig(max_attempts=3, max_retry_after_s=1.0)
    got = call_with_retries(lambda: (_ for _ in ()).throw(ModelCallError("rate_limit", "x", retry_after_s=60)), policy, sleep=lambda s: None)
    assert got.error is not None and got.error.error_class == "rate_limit" and got.retries == 0


def test_open_breaker_short_circuits_without_calling() -> None:
    clock = FakeClock()
    b = CircuitBreaker(CircuitConfig(failure_threshold=1, cooldown_s=10), clock)
    b.record_failure()
    calls = []
    got = call_with_retries(lambda: calls.append(1), RetryConfig(), b, sleep=lambda s: None)
    assert calls == [] and got.error is not None and got.error.error_class == "circuit_open"
    clock.advance(timedelta(seconds=10).total_seconds())
    got = call_with_retries(lambda: "ok", RetryConfig(), b, sleep=lambda s: None)
    assert got.value == "ok" and b.state is CircuitState.HALF_OPEN


def test_a_retry_cut_short_by_the_breaker_is_not_counted() -> None:
    # model_retries must equal the requests that really went out minus one, so the
    # counts agree with the provider's log when the circuit opens between two attempts
    b = CircuitBreaker(CircuitConfig(failure_threshold=2, cooldown_s=10), FakeClock())
    calls: list[int] = []
    retried: list[str] = []

    def fn() -> str:
        calls.append(1)
        raise ModelCallError("server_error", "x")

    got = call_with_retries(fn, RetryConfig(max_attempts=5), b, sleep=lambda s: None, on_retry=retried.append)
    assert len(calls) == 2 and got.attempts == 2
    assert got.retries == 1 and retried == ["server_error"]
    assert got.error is not None and got.error.error_class == "server_error"
