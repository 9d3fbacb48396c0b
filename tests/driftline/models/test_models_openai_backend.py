"""The real OpenAI-compatible client against the loopback test server (nothing patched)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from driftline.clock import FakeClock
from driftline.config.models import BackendConfig, CircuitConfig, RetryConfig, TaskConfig
from driftline.models.openai_compat import OpenAIBackend
from driftline.models.prompts import TaskSpec
from driftline.models.resilience import CircuitState
from driftline.models.types import ModelRequest
from driftline.testing.openai_server import Behaviour, OpenAITestServer

TASKS = {
    "sentiment": TaskSpec("sentiment", TaskConfig(kind="sentiment")),
    "topic": TaskSpec("topic", TaskConfig(kind="classification", categories=["billing", "shipping", "other"])),
    "facts": TaskSpec(
        "facts",
        TaskConfig(
            kind="extraction",
            json_schema={"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"], "additionalProperties": False},
        ),
    ),
    "summary": TaskSpec("summary", TaskConfig(kind="summarization")),
}

FAST_RETRY = RetryConfig(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, jitter=0.1)


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(Behaviour()) as srv:
        yield srv


def make_backend(srv: OpenAITestServer, timeout_s: float = 0.5, **over: object) -> OpenAIBackend:
    cfg = BackendConfig(kind="openai", model="gpt-test", base_url=srv.base_url, timeout_s=timeout_s, retry=FAST_RETRY, **over)  # type: ignore[arg-type]
    return OpenAIBackend("primary", cfg, TASKS, FakeClock())


def req(key: str, text: str = "great service, thanks", task: str = "sentiment") -> ModelRequest:
    return ModelRequest(key, text, task)


def test_batch_success_in_order_with_usage(server: OpenAITestServer) -> None:
    # no request may be retried here: a timeout that a loaded machine cannot miss (0.5 s did, at load 25)
    b = make_backend(server, timeout_s=10.0)
    texts = ["great, thanks", "awful and broken", "it is a table"] * 5
    results = b.call_batch([req(f"k{i}", t) for i, t in enumerate(texts)])
    assert [r.label for r in results] == ["positive", "negative", "neutral"] * 5
    log = {e["key"]: e for e in server.log}
    for i, r in enumerate(results):
        assert r.ok and r.retries == 0 and not r.tokens_estimated
        assert r.input_tokens == log[f"k{i}"]["usage"]["prompt_tokens"]
        assert r.output_tokens == log[f"k{i}"]["usage"]["completion_tokens"]
        assert r.model_version == "test-model-2026-01"
    b.close()


def test_classification_and_summary_and_extraction(server: OpenAITestServer) -> None:
    b = make_backend(server)
    r = b.call_batch([req("a", "my billing is wrong", "topic"), req("b", "the parcel never came, where is it now please", "summary")])
    assert r[0].label == "billing" and r[0].ok
    assert r[1].ok and '"summary"' in (r[1].output or "")
    server.update(content='{"order": "A-1"}')
    r2 = b.call_batch([req("c", "order A-1", "facts")])[0]
    assert r2.ok and r2.output == '{"order":"A-1"}'
    b.close()


def test_retry_after_is_honoured(server: OpenAITestServer) -> None:
    server.update(retry_after="0.4")
    server.script("rate_limit", "ok")
    b = make_backend(server)
    start = time.monotonic()
    r = b.call_batch([req("k")])[0]
    elapsed = time.monotonic() - start
    assert r.ok and r.retries == 1
    assert elapsed >= 0.4  # the backoff alone (10 ms) would be far shorter
    assert [e["outcome"] for e in server.log] == ["rate_limit", "ok"]
    b.close()


@pytest.mark.parametrize(("outcome", "error_class"), [("bad_request", "bad_request"), ("unauthorized", "auth_error"), ("forbidden", "auth_error"), ("quota", "quota")])
def test_no_retry_for_client_errors(server: OpenAITestServer, outcome: str, error_class: str) -> None:
    server.script(outcome, "ok", "ok")
    b = make_backend(server)
    r = b.call_batch([req("k")])[0]
    assert r.error_class == error_class and r.retries == 0
    assert len(server.log) == 1
    b.close()


@pytest.mark.parametrize(("outcome", "error_class"), [("server_error", "server_error"), ("unavailable", "server_error"), ("reset", "network"), ("timeout", "timeout"), ("garbage", "server_error")])
def test_transient_errors_are_retried_then_classified(server: OpenAITestServer, outcome: str, error_class: str) -> None:
    server.update(hang_s=1.0)
    server.script(outcome, outcome, outcome)
    b = make_backend(server)
    r = b.call_batch([req("k")])[0]
    assert r.error_class == error_class and r.retries == 2
    assert [e["outcome"] for e in server.log] == [outcome] * 3
    server.script(outcome)
    r = b.call_batch([req("k2")])[0]
    assert r.ok and r.retries == 1
    b.close()


def test_malformed_output_gets_one_corrective_retry(server: OpenAITestServer) -> None:
    server.script("malformed", "ok")
    b = make_backend(server)
    r = b.call_batch([req("k", "great")])[0]
    assert r.ok and r.label == "positive" and r.retries == 1
    # both answers were billed: usage of both requests is counted
    usage = [e["usage"] for e in server.log]
    assert len(usage) == 2 and r.input_tokens == usage[0]["prompt_tokens"] + usage[1]["prompt_tokens"]
    server.script("malformed", "malformed")
    r = b.call_batch([req("k2")])[0]
    assert r.error_class == "bad_output" and r.retries == 1 and r.input_tokens > 0
    b.close()


def test_wrong_or_missing_usage_is_estimated(server: OpenAITestServer) -> None:
    b = make_backend(server)
    server.script("bad_usage", "no_usage")
    r1, r2 = b.call_batch([req("a")]), b.call_batch([req("b")])
    for r in (r1[0], r2[0]):
        assert r.ok and r.tokens_estimated and r.input_tokens > 0 and r.output_tokens > 0
    b.close()


def test_cached_and_reasoning_tokens_are_read(server: OpenAITestServer) -> None:
    server.update(usage={"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300, "prompt_tokens_details": {"cached_tokens": 600}, "completion_tokens_details": {"reasoning_tokens": 200}})
    r = make_backend(server).call_batch([req("k")])[0]
    assert (r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens, r.tokens_estimated) == (1000, 300, 600, 200, False)


def test_requests_in_flight_are_capped(server: OpenAITestServer) -> None:
    server.update(latency_s=0.1)
    b = make_backend(server, max_in_flight=4)
    start = time.monotonic()
    results = b.call_batch([req(f"k{i}") for i in range(12)])
    elapsed = time.monotonic() - start
    assert all(r.ok for r in results)
    assert elapsed >= 0.3  # 12 requests, 4 at a time, 100 ms each: at least three waves
    arrivals = sorted(e["t"] for e in server.log)
    assert max(sum(1 for t in arrivals if s <= t < s + 0.09) for s in arrivals) <= 4
    b.close()


def test_breaker_opens_on_failures_and_stops_calling(server: OpenAITestServer) -> None:
    clock = FakeClock()
    cfg = BackendConfig(kind="openai", model="gpt-test", base_url=server.base_url, retry=RetryConfig(max_attempts=1), circuit=CircuitConfig(failure_threshold=3, cooldown_s=60, half_open_successes=1))
    b = OpenAIBackend("primary", cfg, TASKS, clock)
    server.script("server_error", "server_error", "server_error")
    for i in range(3):
        assert b.call_batch([req(f"k{i}")])[0].error_class == "server_error"
    assert b.breaker.state is CircuitState.OPEN
    r = b.call_batch([req("k9")])[0]
    assert r.error_class == "circuit_open" and len(server.log) == 3
    clock.advance(60)
    assert b.call_batch([req("k10")])[0].ok
    assert b.breaker.state is CircuitState.CLOSED
    b.close()


def test_idempotency_key_and_auth_header_are_sent(server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.update(api_key="sk-test")
    monkeypatch.setenv("DRIFTLINE_TEST_KEY", "sk-test")
    b = make_backend(server, api_key_env="DRIFTLINE_TEST_KEY")
    assert b.call_batch([req("topic:0:42")])[0].ok
    assert server.log[-1]["key"] == "topic:0:42"
    monkeypatch.delenv("DRIFTLINE_TEST_KEY")
    b2 = make_backend(server, api_key_env="DRIFTLINE_TEST_KEY")
    assert b2.call_batch([req("x")])[0].error_class == "auth_error"
    assert len(server.log) == 1  # no request sent without a key
    b.close()
    b2.close()
