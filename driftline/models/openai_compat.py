"""``openai``: any OpenAI-compatible chat completions endpoint.

Works with OpenAI, Azure OpenAI (``base_url`` of the deployment plus an ``api-version``
header), vLLM, Ollama, llama.cpp's server and LiteLLM proxies: it POSTs
``{base_url}/chat/completions`` with the task's messages and parses the JSON answer.

A batch is sent as concurrent requests, at most ``max_in_flight`` at a time (a thread
pool over one pooled ``httpx.Client``).  Each request gets timeouts, retries with
exponential backoff and jitter for timeout / network / 429 / 5xx (Retry-After is a
floor), no retry for 400 / 401 / 403, the backend's circuit breaker, and one corrective
retry carrying the validation error when the answer does not parse.  Token usage is
taken from the response (cached and reasoning tokens included where reported); when it
is missing or inconsistent the characters-per-token estimate is used and the result is
marked ``tokens_estimated``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from driftline.models.base import ModelBackend, ResultsHook, register_backend
from driftline.models.prompts import OutputError, TaskSpec, parse_output
from driftline.models.ratelimit import Permit
from driftline.models.resilience import CircuitBreaker, CircuitState, call_with_retries, classify_exception, classify_status, parse_retry_after
from driftline.models.types import ModelCallError, ModelRequest, ModelResult
from driftline.tracing import current as current_tracing
from driftline.tracing import format_traceparent

log = logging.getLogger("driftline.models")


@dataclass(slots=True)
class _Reply:
    content: str | None
    usage: dict[str, int] | None
    usage_problem: str | None
    model: str
    fingerprint: str | None
    prompt_chars: int
    response_id: str | None = None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def parse_usage(usage: Any) -> tuple[dict[str, int] | None, str | None]:
    """Validated token counts from an OpenAI ``usage`` object, or ``(None, why)``."""
    if not isinstance(usage, dict):
        return None, "no usage reported"
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None, f"usage counts missing or invalid: {usage!r}"[:200]
    pd = usage.get("prompt_tokens_details") or {}
    cd = usage.get("completion_tokens_details") or {}
    cached = _int(pd.get("cached_tokens", 0)) if isinstance(pd, dict) else None
    reasoning = _int(cd.get("reasoning_tokens", 0)) if isinstance(cd, dict) else None
    if cached is None or reasoning is None:
        return None, "usage details invalid"
    if cached > prompt or reasoning > completion:
        return None, "usage details exceed their totals"
    total = usage.get("total_tokens")
    if total is not None and _int(total) != prompt + completion:
        return None, f"total_tokens {total!r} != prompt + completion ({prompt + completion})"
    return {"input": prompt, "output": completion, "cached": cached, "reasoning": reasoning}, None


def _span_result(span: Any, reply: _Reply | None, result: ModelResult, error_class: str | None) -> None:
    """GenAI attributes of the answer (usage over every attempt; never its content)."""
    if reply is not None:
        span.set_attribute("gen_ai.response.model", reply.model)
        if reply.response_id:
            span.set_attribute("gen_ai.response.id", reply.response_id[:128])
    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": result.input_tokens,
            "gen_ai.usage.output_tokens": result.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": result.cached_tokens,
            "gen_ai.usage.reasoning.output_tokens": result.reasoning_tokens,
            "driftline.model.retries": result.retries,
            "driftline.model.tokens_estimated": result.tokens_estimated,
        }
    )
    if error_class is not None:
        span.set_attribute("error.type", error_class)
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, error_class))


@register_backend("openai")
class OpenAIBackend(ModelBackend):
    """OpenAI-compatible chat completions with retries, breaker and JSON validation."""

    remote = True
    default_model = ""

    def __init__(self, *args: Any, sleep: Callable[[float], None] = time.sleep, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        headers = {"Content-Type": "application/json", **cfg.headers}
        self._key_missing = False
        if cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        elif cfg.api_key_env:
            self._key_missing = True
            log.warning(orjson.dumps({"event": "model_api_key_missing", "tier": self.name, "env": cfg.api_key_env}).decode())
        self._client = httpx.Client(
            base_url=(cfg.base_url or "").rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
            limits=httpx.Limits(max_connections=cfg.max_in_flight, max_keepalive_connections=cfg.max_in_flight),
        )
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_in_flight, thread_name_prefix=f"model-{self.name}")
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.breaker = CircuitBreaker(cfg.circuit, self.clock, on_change=self._breaker_changed)

    def _breaker_changed(self, state: CircuitState) -> None:
        from driftline.models import metrics

        metrics.CIRCUIT_STATE.labels(backend=self.kind, model=self.model or "unknown", tier=self.name).set(state.value)
        log.info(orjson.dumps({"event": "model_circuit", "tier": self.name, "state": state.name.lower()}).decode())

    # -- one HTTP attempt -------------------------------------------------
    def _post(self, messages: list[dict[str, str]], key: str, traceparent: str | None = None) -> _Reply:
        if self._key_missing:
            raise ModelCallError("auth_error", f"environment variable {self.config.api_key_env} is not set")
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.config.max_output_tokens}
        if self.config.json_mode:
            body["response_format"] = {"type": "json_object"}
        try:
            headers = {"Idempotency-Key": key, "traceparent": traceparent} if traceparent else {"Idempotency-Key": key}
            resp = self._client.post("chat/completions", content=orjson.dumps(body), headers=headers)
        except httpx.HTTPError as exc:
            raise ModelCallError(classify_exception(exc), f"{type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            cls = classify_status(resp.status_code, resp.content)
            retry_after = parse_retry_after(resp.headers.get("retry-after")) if resp.status_code in (429, 503) else None
            if resp.status_code == 429 and retry_after and cls == "rate_limit" and self.gate is not None:
                self.gate.pause(retry_after)  # every worker and process waits, not only this request
            raise ModelCallError(cls, f"HTTP {resp.status_code}: {resp.text[:200]}", retry_after_s=retry_after, status=resp.status_code)
        try:
            data = orjson.loads(resp.content)
            content = data["choices"][0]["message"].get("content")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise ModelCallError("server_error", f"HTTP 200 with an unreadable body: {resp.text[:120]!r}") from None
        usage, problem = parse_usage(data.get("usage"))
        return _Reply(
            content=content if isinstance(content, str) else None,
            usage=usage,
            usage_problem=problem,
            model=str(data.get("model") or self.model),
            fingerprint=data.get("system_fingerprint"),
            prompt_chars=sum(len(m["content"]) for m in messages),
            response_id=data.get("id") if isinstance(data.get("id"), str) else None,
        )

    def _attempts(self, messages: list[dict[str, str]], key: str, permit: Permit | None, traceparent: str | None = None) -> tuple[_Reply | None, ModelCallError | None, int, int]:
        """Reply or error, retries and requests sent (0 when the breaker refused the first)."""
        with self._rng_lock:
            rng = random.Random(self._rng.random())
        got = call_with_retries(
            lambda: self._post(messages, key, traceparent), self.config.retry, self.breaker, rng=rng, sleep=self._sleep, on_retry=self.on_retry,
            before_attempt=permit.acquire if permit is not None else None,
        )
        return got.value, got.error, got.retries, got.attempts  # type: ignore[return-value]

    # -- one request ------------------------------------------------------
    def call_one(self, req: ModelRequest) -> ModelResult:
        """One request (with its retries), in a GenAI client span when tracing is on; the
        request carries the record's ``traceparent`` (the span's, when one is recorded)."""
        tracing = current_tracing()
        if tracing is None:
            return self._call_one(req, req.trace, None)
        attrs = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.system": "openai", "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": self.config.max_output_tokens, "gen_ai.request.temperature": 0.0, "driftline.model.tier": self.name, "driftline.model.task": req.task,
        }  # fmt: skip
        host = self._client.base_url
        if host.host:
            attrs["server.address"] = host.host
            attrs["server.port"] = host.port or (443 if host.scheme == "https" else 80)
        with tracing.request_span(f"chat {self.model}", req.trace, attrs) as span:
            ctx = span.get_span_context()
            return self._call_one(req, format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled) if ctx.is_valid else req.trace, span)

    def _call_one(self, req: ModelRequest, traceparent: str | None, span: Any) -> ModelResult:
        spec = self.tasks[req.task]
        start = time.perf_counter()
        messages = spec.messages(req.text or "")
        tokens = {"input": 0, "output": 0, "cached": 0, "reasoning": 0}
        estimated = False
        retries = 0

        def bill(reply: _Reply) -> None:
            nonlocal estimated
            if reply.usage is not None:
                for k in tokens:
                    tokens[k] += reply.usage[k]
            else:
                estimated = True
                tokens["input"] += int(reply.prompt_chars / self.chars_per_token + 0.999)
                tokens["output"] += int(len(reply.content or "") / self.chars_per_token + 0.999)

        permit = self.gate.permit(req) if self.gate is not None else None  # rate limits, before every attempt
        reply, err, n, _sent = self._attempts(messages, req.key, permit, traceparent)
        retries += n
        error: tuple[str, str] | None = None
        parsed = None
        if reply is not None:
            bill(reply)
            try:
                parsed = parse_output(spec, reply.content)
            except OutputError as exc:
                # one corrective retry that shows the model its mistake
                retry_messages = [
                    *messages,
                    {"role": "assistant", "content": reply.content or ""},
                    {"role": "user", "content": f"Your answer was invalid: {exc}. Reply again with the JSON object only."},
                ]
                # a different request: its own idempotency key, so a provider that honours
                # keys does not answer it with the stored invalid answer
                reply2, err2, n2, sent2 = self._attempts(retry_messages, f"{req.key}/fix", permit, traceparent)
                if sent2:  # model_retries counts requests that went out (1 + retries = requests sent)
                    retries += 1 + n2
                    if self.on_retry:
                        self.on_retry("bad_output")
                if reply2 is None:
                    assert err2 is not None
                    error = (err2.error_class, err2.message)
                else:
                    bill(reply2)
                    reply = reply2
                    try:
                        parsed = parse_output(spec, reply2.content)
                    except OutputError as exc2:
                        error = ("bad_output", str(exc2))
        else:
            assert err is not None
            error = (err.error_class, err.message)
        if permit is not None:
            permit.settle(tokens["input"] + tokens["output"])
        latency = (time.perf_counter() - start) * 1000.0
        result = ModelResult(
            model_name=self.model,
            input_tokens=tokens["input"],
            output_tokens=tokens["output"],
            cached_tokens=tokens["cached"],
            reasoning_tokens=tokens["reasoning"],
            tokens_estimated=estimated,
            latency_ms=latency,
            retries=retries,
        )
        if reply is not None:
            result.model_version = reply.fingerprint or reply.model
        if span is not None and span.is_recording():
            _span_result(span, reply, result, error[0] if error is not None else None)
        if error is not None or parsed is None:
            result.error_class, result.error = error or ("bad_output", "no answer")
            return result
        result.label, result.confidence, result.output = parsed
        return result

    def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        if not requests:
            return []
        if len(requests) == 1:
            return [self.call_one(requests[0])]
        return list(self._pool.map(self.call_one, requests))

    def iter_batch(self, requests: Sequence[ModelRequest], max_rows: int, on_results: ResultsHook | None = None) -> Iterator[list[tuple[int, ModelResult]]]:
        """All requests go to the pool at once (``max_in_flight`` run concurrently, so one slow
        request never holds back the rest of its batch); each result goes to ``on_results``
        in the pool thread that received it, then results are handed over as they complete,
        a group per wake-up, in position order within a group."""

        def one(j: int, req: ModelRequest) -> ModelResult:
            res = self.call_one(req)
            if on_results is not None:
                on_results([(j, res)])
            return res

        futures: dict[Future[ModelResult], int] = {self._pool.submit(one, i, r): i for i, r in enumerate(requests)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield sorted(((futures[f], self._result_of(f)) for f in done), key=lambda p: p[0])
        finally:
            for f in pending:
                f.cancel()

    def _result_of(self, future: Future[ModelResult]) -> ModelResult:
        try:
            return future.result()
        except Exception as exc:  # a bug must not drop the event: the chain moves on
            log.error(orjson.dumps({"event": "model_request_crash", "tier": self.name, "error": type(exc).__name__}).decode())
            return ModelResult.failure("internal", type(exc).__name__, model_name=self.model)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
