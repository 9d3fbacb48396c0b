"""The model backend interface and its registry.

A backend is one small class registered under a ``kind``::

    @register_backend("echo")
    class EchoBackend(ModelBackend):
        remote = False
        default_model = "echo"

        def call_batch(self, requests):
            return [ModelResult(label="neutral", confidence=1.0, model_name=self.model) for _ in requests]

and is then usable in the configuration as ``backends: {mine: {kind: echo}}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, TypeVar

from driftline.clock import Clock, SystemClock
from driftline.config.models import BackendConfig
from driftline.models.prompts import TaskSpec
from driftline.models.types import ModelRequest, ModelResult


class ModelBackend(ABC):
    """Turns a batch of requests into a batch of results, in the same order.

    ``call_batch`` never raises for a failed request: it returns a result with
    ``error_class`` set, so the chain can move the request to the next tier.
    """

    kind: ClassVar[str] = ""
    #: True when requests leave the process (privacy routing and budgets apply).
    remote: ClassVar[bool] = False
    default_model: ClassVar[str] = ""

    def __init__(self, name: str, config: BackendConfig, tasks: Mapping[str, TaskSpec], clock: Clock | None = None) -> None:
        self.name = name
        self.config = config
        self.tasks = tasks
        self.clock = clock or SystemClock()
        self.model = config.model or self.default_model

    def supports(self, task: TaskSpec) -> bool:
        """Whether this backend can run ``task`` at all (unsupported tasks fall through)."""
        return True

    @abstractmethod
    def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        """One result per request, in order."""

    def iter_batch(self, requests: Sequence[ModelRequest], max_rows: int) -> Iterator[list[tuple[int, ModelResult]]]:
        """Results as they become available, in groups of ``(position in requests, result)``.

        The service records each group of a remote tier in the call ledger before it
        takes the next, so a crash re-sends at most the requests still in flight.  This
        default calls :meth:`call_batch` on chunks of at most ``max_rows`` requests;
        backends that answer requests concurrently override it to hand each result over
        as soon as it completes.  Every position is yielded exactly once.
        """
        for start in range(0, len(requests), max_rows):
            chunk = requests[start : start + max_rows]
            got = self.call_batch(chunk)
            if len(got) != len(chunk):
                raise RuntimeError(f"backend {self.name!r} returned {len(got)} results for {len(chunk)} requests")
            yield [(start + j, r) for j, r in enumerate(got)]

    def close(self) -> None:
        """Release connections and threads."""


B = TypeVar("B", bound=type[ModelBackend])

BACKENDS: dict[str, type[ModelBackend]] = {}


def register_backend(kind: str) -> Callable[[B], B]:
    """Class decorator registering a backend under ``kind``."""

    def deco(cls: B) -> B:
        if kind in BACKENDS and BACKENDS[kind] is not cls:
            raise ValueError(f"model backend kind {kind!r} is already registered by {BACKENDS[kind].__name__}")
        cls.kind = kind
        BACKENDS[kind] = cls
        return cls

    return deco


def build_backend(name: str, config: BackendConfig, tasks: Mapping[str, TaskSpec], clock: Clock | None = None) -> ModelBackend:
    """Instantiate the backend of tier ``name``; the error names the bad key."""
    from driftline.models import local, openai_compat, rules  # noqa: F401  (register built-ins)

    cls = BACKENDS.get(config.kind)
    if cls is None:
        raise ValueError(f"models.backends.{name}.kind: unknown backend kind {config.kind!r} (registered: {sorted(BACKENDS)})")
    return cls(name, config, tasks, clock)
