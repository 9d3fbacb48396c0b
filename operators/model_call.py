"""Batched model calls inside the dataflow.

:func:`call_models` is the plain operator: a frame of requests in, the same rows in the
same order out, with the result columns of :func:`driftline.models.model_output_schema`.

:class:`ModelCallLogic` is the Bytewax-facing step for ``op.stateful_batch``: it
accumulates rows from incoming micro-batches (Polars frames) and calls the models when
``batching.max_rows`` rows are waiting (default 64) or the oldest has waited
``batching.max_wait_ms`` (default 200 ms), whichever comes first.  Rows leave in the
order they arrived.  Its state (rows waiting, with their arrival times) is a
:class:`ModelCallState` dataclass that Bytewax snapshots, so rows buffered at a crash are
called after recovery; results already recorded in the call ledger are replayed, not
re-billed.

The step calls the models in the worker's own thread and returns when the batch is
answered, so when a rate limit has no room (``on_rate_limit: wait``) the batch waits,
the worker stops polling its input, and Kafka consumption slows to what the limit
allows: backpressure without dropping or reordering a row.

Micro-batches are keyed by :func:`model_batch_key`, their input partition, so the
partitions' batches spread over the workers and each key owns its waiting rows; the
model service (backends, budgets, cache, ledger) is built once per worker process and
shared by its keys, and its totals are shared with the other processes through the
ledger.  Wiring::

    import bytewax.operators as op
    from driftline.models import ModelService
    from driftline.operators.model_call import model_batch_key, model_call_builder

    service = ModelService(cfg.models)
    keyed = op.key_on("key_models", frames, model_batch_key)
    out = op.stateful_batch("model_call", keyed, model_call_builder("model_call", service, cfg.models.batching))
    results = op.map("model_results", out, lambda kv: kv[1].results)
    budget_events = op.filter_map("model_budget_events", out, lambda kv: kv[1].budget_events if kv[1].budget_events.height else None)

>>> from driftline.config.models import ModelsConfig, LedgerConfig, BatchingConfig
>>> from driftline.clock import FakeClock
>>> from driftline.models import ModelService
>>> svc = ModelService(ModelsConfig(ledger=LedgerConfig(enabled=False)))
>>> clock = FakeClock()
>>> logic = ModelCallLogic("model_call", svc, BatchingConfig(max_rows=2, max_wait_ms=200), clock, None)
>>> emitted, _ = logic.on_batch([pl.DataFrame({"text": ["good", "bad", "fine"]})])
>>> [o.results.height for o in emitted], logic.notify_at() == clock.now() + timedelta(milliseconds=200)
([2], True)
>>> _ = clock.advance(0.2); emitted, _ = logic.on_notify(); emitted[0].results["model_label"].to_list()
['positive']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl
from bytewax.operators import StatefulBatchLogic

from driftline.clock import Clock, SystemClock
from driftline.config.models import BatchingConfig
from driftline.models.budget import budget_events_frame
from driftline.models.service import ModelService

_NO_EVENTS = budget_events_frame([])


def model_batch_key(frame: pl.DataFrame) -> str:
    """The routing key of a micro-batch for the model step: its input partition.

    A micro-batch of the Kafka source holds one partition's records, in offset order, so
    keying by ``src_topic:src_partition`` keeps each partition's rows in order, spreads
    the partitions over the workers, and lets a partition move to another worker (its
    waiting rows travel in the step's snapshot; its ledger entries are found by any
    worker of the host).  Frames without source coordinates share one key.

    >>> model_batch_key(pl.DataFrame({"src_topic": ["events"], "src_partition": [2], "text": ["hi"]}))
    'events:2'
    >>> model_batch_key(pl.DataFrame({"text": ["hi"]}))
    'unpartitioned'
    """
    if frame.height and "src_topic" in frame.columns and "src_partition" in frame.columns:
        topic, part = frame["src_topic"][0], frame["src_partition"][0]
        if topic is not None and part is not None:
            return f"{topic}:{part}"
    return "unpartitioned"


def call_models(frame: pl.DataFrame, service: ModelService) -> pl.DataFrame:
    """Run every row of ``frame`` through the model chain; same rows, same order, plus result columns.

    Input columns used: ``model_input`` (else ``text``), ``route_local``, ``classification``,
    ``tenant``, ``source``, ``event_id``, ``src_topic``, ``src_partition``, ``src_offset``.
    Budget events raised meanwhile are dropped here: use :meth:`ModelService.process`
    (or :class:`ModelCallLogic`) to get them too.
    """
    return service.process(frame).results


@dataclass(slots=True)
class ModelCallOutput:
    """What the step emits: the called rows and the budget events raised meanwhile."""

    results: pl.DataFrame
    budget_events: pl.DataFrame


@dataclass(slots=True)
class ModelCallState:
    """Rows waiting to be called, as ``(arrival time, frame)`` segments in arrival order."""

    segments: list[tuple[datetime, pl.DataFrame]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.height for _, f in self.segments)

    def copy(self) -> ModelCallState:
        return ModelCallState(list(self.segments))  # frames are never mutated in place


class ModelCallLogic(StatefulBatchLogic[pl.DataFrame, ModelCallOutput, ModelCallState]):
    """Count-or-time batching in front of a :class:`ModelService` (for ``op.stateful_batch``)."""

    def __init__(self, step_id: str, service: ModelService, batching: BatchingConfig, clock: Clock | None = None, state: ModelCallState | None = None) -> None:
        self.step_id = step_id
        self.service = service
        self.max_rows = batching.max_rows
        self.max_wait = timedelta(milliseconds=batching.max_wait_ms)
        self.clock = clock or SystemClock()
        self.state = state.copy() if state is not None else ModelCallState()
        self._waiting = self.state.rows

    # -- batching ---------------------------------------------------------
    def _take(self, n: int) -> pl.DataFrame:
        """Remove the first ``n`` waiting rows."""
        parts: list[pl.DataFrame] = []
        need = n
        segs = self.state.segments
        while need and segs:
            at, f = segs[0]
            if f.height <= need:
                parts.append(f)
                need -= f.height
                segs.pop(0)
            else:
                parts.append(f.slice(0, need))
                segs[0] = (at, f.slice(need))
                need = 0
        self._waiting -= n - need
        return parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")

    def _call(self, chunks: list[pl.DataFrame]) -> list[ModelCallOutput]:
        results: list[pl.DataFrame] = []
        events: list[pl.DataFrame] = []
        for chunk in chunks:
            try:
                got = self.service.process(chunk)
            except Exception as exc:
                raise RuntimeError(f"step {self.step_id!r}: model call failed on a batch of {chunk.height} rows: {type(exc).__name__}: {exc}") from exc
            results.append(got.results)
            if got.budget_events.height:
                events.append(got.budget_events)
        if not results:
            return []
        return [
            ModelCallOutput(
                results[0] if len(results) == 1 else pl.concat(results, how="vertical"),
                pl.concat(events) if events else _NO_EVENTS,
            )
        ]

    def on_batch(self, values: list[pl.DataFrame]) -> tuple[Iterable[ModelCallOutput], bool]:
        now = self.clock.now()
        for v in values:
            if not isinstance(v, pl.DataFrame):
                raise TypeError(f"step {self.step_id!r}: expected Polars DataFrames (micro-batches of requests), received {type(v).__name__}")
            if v.height:
                self.state.segments.append((now, v))
                self._waiting += v.height
        # every full batch waiting is called now; the service streams them through each
        # tier and records every remote answer in the ledger as soon as it arrives
        full = self._waiting - self._waiting % self.max_rows
        return self._call([self._take(full)] if full else []), StatefulBatchLogic.RETAIN

    def _flush(self) -> list[ModelCallOutput]:
        if not self._waiting:
            return []
        return self._call([self._take(self._waiting)])

    def on_notify(self) -> tuple[Iterable[ModelCallOutput], bool]:
        if self.state.segments and self.clock.now() >= self.state.segments[0][0] + self.max_wait:
            return self._flush(), StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ModelCallOutput], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self.state.segments:
            return None
        return self.state.segments[0][0] + self.max_wait

    def snapshot(self) -> ModelCallState:
        return self.state.copy()


def model_call_builder(step_id: str, service: ModelService, batching: BatchingConfig, clock: Clock | None = None) -> Callable[[ModelCallState | None], ModelCallLogic]:
    """The ``builder`` argument of ``op.stateful_batch`` (resumes from a snapshot when given one)."""

    def build(state: ModelCallState | None) -> ModelCallLogic:
        return ModelCallLogic(step_id, service, batching, clock, state)

    return build
