"""The model backend protocol, its convenience base class and the registry.

The service talks to a tier only through :class:`Backend`, a declared protocol: every
member it uses (``remote``, ``model``, ``breaker``, ``supports``, ``iter_batch``...) is
part of it, so nothing is probed with ``hasattr``.  A new backend is one small class
registered under a ``kind``; :class:`ModelBackend` implements the protocol around a
single ``call_batch`` method::

    @register_backend("echo")
    class EchoBackend(ModelBackend):
        remote = False
        default_model = "echo"

        def call_batch(self, requests):
            return [ModelResult(label="neutral", confidence=1.0, model_name=self.model) for _ in requests]

and is then usable in the configuration as ``backends: {mine: {kind: echo}}``.

>>> from driftline.config.models import TaskConfig
>>> b = build_backend("r", BackendConfig(kind="rules"), {"sentiment": TaskSpec("sentiment", TaskConfig())})
>>> isinstance(b, Backend), b.remote, b.breaker is None
(True, False, True)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import polars as pl

from driftline.clock import Clock, SystemClock
from driftline.config.models import BackendConfig
from driftline.models.prompts import TaskSpec
from driftline.models.types import ModelRequest, ModelResult

if TYPE_CHECKING:
    from driftline.models.ratelimit import TierGate
    from driftline.models.resilience import CircuitBreaker

#: Called with the error class each time a remote request is retried (metrics hook in there).
RetryHook = Callable[[str], None]
#: Called with results in the thread that produced them, before they are yielded (never raises).
ResultsHook = Callable[[list[tuple[int, ModelResult]]], None]


@runtime_checkable
class Backend(Protocol):
    """What the model service needs from a tier.

    ``iter_batch`` hands results over as they become available, in groups of
    ``(position in requests, result)``, every position exactly once; a failed request
    is a result with ``error_class`` set, never an exception.  It calls ``on_results``
    (when given) with each group in the thread that produced it, before yielding it:
    there the service records a remote tier's answers in the call ledger, the moment
    they exist, so a crash re-sends at most the requests still in flight (a group the
    hook did not see is recorded when it is yielded).  ``breaker`` is the tier's
    circuit breaker (None when the tier has none): while it is open the service does
    not call.  ``gate`` is the tier's rate limits and Retry-After pause, set by the
    service on remote tiers: a backend that sends requests takes a permit per request
    (``gate.permit(request)``), calls its ``acquire()`` before every attempt and
    ``settle(tokens billed)`` at the end, and calls ``gate.pause(seconds)`` on a 429 with
    Retry-After.  The batches of several worker threads run at the same time, so
    ``iter_batch`` may be called from several threads at once.
    """

    name: str
    kind: str
    model: str
    remote: bool
    config: BackendConfig
    breaker: CircuitBreaker | None
    gate: TierGate | None

    def supports(self, task: TaskSpec) -> bool: ...

    def iter_batch(self, requests: Sequence[ModelRequest], max_rows: int, on_results: ResultsHook | None = None) -> Iterator[list[tuple[int, ModelResult]]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ColumnAnswers:
    """A batch answered column-wise: ``frame`` holds ``model_label``, ``model_output``,
    ``model_confidence``, ``model_name`` and ``model_version``, one row per text in order;
    ``latency_ms`` is the time per row (the batch's time over its rows)."""

    frame: pl.DataFrame
    latency_ms: float


@runtime_checkable
class ColumnBackend(Protocol):
    """A local backend that can also answer a whole batch as columns, every text
    successfully, without a request or result object per row (the service uses it when its
    first tier would answer every row of the batch anyway; see :class:`ModelService`)."""

    def answer_columns(self, texts: pl.Series) -> ColumnAnswers:
        """The answers to ``texts`` (null counts as ""), the same as ``call_batch`` gives."""
        ...


class ModelBackend(ABC):
    """Base class of registered backends: turns a batch of requests into a batch of results, in order.

    ``call_batch`` never raises for a failed request: it returns a result with
    ``error_class`` set, so the chain can move the request to the next tier.
    ``chars_per_token`` (token estimate when a provider reports no usage) and
    ``on_retry`` (called with the error class of each retry) are given by the service.
    """

    kind: ClassVar[str] = ""
    #: True when requests leave the process (privacy routing and budgets apply).
    remote: ClassVar[bool] = False
    default_model: ClassVar[str] = ""
    #: The tier's circuit breaker; backends that call a provider set one.
    breaker: CircuitBreaker | None = None
    #: The tier's rate limits and pause (set by the service on remote tiers).
    gate: TierGate | None = None

    def __init__(
        self,
        name: str,
        config: BackendConfig,
        tasks: Mapping[str, TaskSpec],
        clock: Clock | None = None,
        *,
        chars_per_token: float = 4.0,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.tasks = tasks
        self.clock = clock or SystemClock()
        self.model = config.model or self.default_model
        self.chars_per_token = chars_per_token
        self.on_retry = on_retry

    def supports(self, task: TaskSpec) -> bool:
        """Whether this backend can run ``task`` at all (unsupported tasks fall through)."""
        return True

    @abstractmethod
    def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        """One result per request, in order."""

    def iter_batch(self, requests: Sequence[ModelRequest], max_rows: int, on_results: ResultsHook | None = None) -> Iterator[list[tuple[int, ModelResult]]]:
        """Results as they become available (see :class:`Backend`).

        This default calls :meth:`call_batch` on chunks of at most ``max_rows`` requests;
        backends that answer requests concurrently override it to hand each result over
        as soon as it completes.
        """
        for start in range(0, len(requests), max_rows):
            chunk = requests[start : start + max_rows]
            got = self.call_batch(chunk)
            if len(got) != len(chunk):
                raise RuntimeError(f"backend {self.name!r} returned {len(got)} results for {len(chunk)} requests")
            group = [(start + j, r) for j, r in enumerate(got)]
            if on_results is not None:
                on_results(group)
            yield group

    def close(self) -> None:
        """Release connections and threads."""


B = TypeVar("B", bound=type[ModelBackend])

BACKENDS: dict[str, type[ModelBackend]] = {}


def add_registered(table: dict[str, Any], name: str, cls: type, what: str) -> None:
    """Register ``cls`` under ``name`` in ``table``; another class under the same name is an error."""
    if name in table and table[name] is not cls:
        raise ValueError(f"{what} {name!r} is already registered by {table[name].__name__}")
    table[name] = cls


def register_backend(kind: str) -> Callable[[B], B]:
    """Class decorator registering a backend under ``kind``."""

    def deco(cls: B) -> B:
        add_registered(BACKENDS, kind, cls, "model backend kind")
        cls.kind = kind
        return cls

    return deco


def build_backend(name: str, config: BackendConfig, tasks: Mapping[str, TaskSpec], clock: Clock | None = None, **options: Any) -> ModelBackend:
    """Instantiate the backend of tier ``name`` (``options``: ``chars_per_token``,
    ``on_retry``, see :class:`ModelBackend`); the error names the bad key."""
    from driftline.models import local, openai_compat, rules  # noqa: F401  (register built-ins)

    cls = BACKENDS.get(config.kind)
    if cls is None:
        raise ValueError(f"models.backends.{name}.kind: unknown backend kind {config.kind!r} (registered: {sorted(BACKENDS)})")
    return cls(name, config, tasks, clock, **options)
