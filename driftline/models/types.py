"""Request and result records shared by every model backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: Error classes a failed call is filed under (``model_error_class``).
ERROR_CLASSES: Final[tuple[str, ...]] = (
    "timeout",
    "rate_limit",
    "server_error",
    "auth_error",
    "bad_output",
    "quota",
    "network",
    "bad_request",
    "circuit_open",
    "throttled",
    "rejected",
    "unsupported",
    "internal",
)

#: Error classes worth retrying with backoff.
RETRYABLE: Final[frozenset[str]] = frozenset({"timeout", "rate_limit", "server_error", "network"})

#: Error classes that count as a failure of the provider for the circuit breaker.
BREAKER_FAILURES: Final[frozenset[str]] = frozenset({"timeout", "rate_limit", "server_error", "network"})


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One input to a model: masked, sanitized text and the task to run on it.

    ``key`` is an idempotency key (the event's source coordinates or id); remote
    backends send it as the ``Idempotency-Key`` header.  ``tenant`` and ``tokens`` (the
    estimated tokens of one attempt) are what rate limits need.  ``trace`` is the record's
    W3C ``traceparent`` (:mod:`driftline.tracing`), sent with the request.
    """

    key: str
    text: str
    task: str
    tenant: str | None = None
    tokens: int = 0
    trace: str | None = None


@dataclass(slots=True)
class ModelResult:
    """The answer (or failure) of one backend for one request.

    ``confidence`` is in [0, 1]; ``output`` is a JSON string (structured answer);
    token counts are what the provider billed for this request over all its attempts
    (``tokens_estimated`` when some came from the characters-per-token estimate).
    """

    label: str | None = None
    output: str | None = None
    confidence: float | None = None
    model_name: str = ""
    model_version: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_estimated: bool = False
    latency_ms: float = 0.0
    retries: int = 0
    error_class: str | None = None
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_class is None

    @classmethod
    def failure(cls, error_class: str, error: str, *, model_name: str = "", retries: int = 0, latency_ms: float = 0.0) -> ModelResult:
        return cls(model_name=model_name, error_class=error_class, error=error, retries=retries, latency_ms=latency_ms)


class ModelCallError(Exception):
    """A classified failure of one attempt; ``retry_after_s`` comes from the provider."""

    def __init__(self, error_class: str, message: str, *, retry_after_s: float | None = None, status: int | None = None) -> None:
        super().__init__(f"{error_class}: {message}")
        self.error_class = error_class
        self.message = message
        self.retry_after_s = retry_after_s
        self.status = status
