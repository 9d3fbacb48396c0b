"""Run a stateless stage on a helper thread, a micro-batch ahead of the rest of the flow.

One Bytewax worker is one thread: it runs every step of a micro-batch in turn, so while
it masks, scores and writes batch *n* nothing else happens in its process.  A good part of
the stateless stages (decode, validation, masking, features, sanitize) is Polars, Arrow
and C work that releases the interpreter lock, and so is much of what follows them (JSON
encoding, Parquet, the Kafka client).  :func:`run_ahead` gives each worker one helper
thread that runs the stage on the pieces as they come in, while the worker thread goes on
with the model calls, windows and sinks of the pieces before them: the two threads overlap
wherever one of them is outside the interpreter.

The step is keyed by one key per worker (:func:`~driftline.operators.placement.worker_keys`,
the worker each piece was sent to by :func:`~driftline.operators.spread.to_workers`), so
a piece never changes worker here.  It passes pieces on in the order they came, at most
``depth`` of them in flight; it blocks on the oldest when a further one comes.  Exactly
once: the pieces taken in and not yet passed on are the step's snapshot
(:class:`AheadState`, their input values): after a crash or a rescale they run again and
are passed on then, in the epoch that resumes them; the pieces passed on before the
snapshot are in the snapshots of the steps after this one.  The stage must therefore be a
function of its input alone (all stateless stages are; their rows are exactly-once by
source coordinates downstream).

A resumed step holds the pieces of its snapshot back until its worker's start marker
(:class:`StartMarkers`, one per worker, from an input of the step's own) or a new piece has
come: Bytewax loads each step's state at the end of the epoch of its snapshot, after that
epoch's items, so a piece passed on before the execution's first epoch would reach a step
downstream (``reorder``) before that step's own state is loaded, and the load would
replace the state the piece went into.  Items of the execution's inputs come in its first
epoch or later, after every load.

>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSink, TestingSource, run_main
>>> flow, out = Dataflow("doc"), []
>>> up = op.input("in", flow, TestingSource([Piece("t:0", n, 0, 1, n) for n in range(5)]))
>>> op.output("out", run_ahead("square", up, lambda pc: pc.map(lambda v: v * v), workers=1), TestingSink(out))
>>> run_main(flow)
>>> [p.value for p in out]
[0, 1, 4, 9, 16]
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.operators import StatefulBatchLogic

from driftline.clock import Clock, SystemClock
from driftline.metrics import HELPER_THREAD_PREFIX
from driftline.operators import spread
from driftline.operators.placement import worker_keys
from driftline.operators.spread import Piece

#: Pieces in flight per worker at most: the helper runs the next piece while the worker
#: goes on with the one before.  On the enrich flow (bench_e2e, 200,000 events, 3
#: alternating rounds) depth 2 was no faster (medians 7,466 and 7,590 events/s) and holds
#: one more micro-batch; a second helper thread was slower (docs/performance.md, round 11).
DEPTH = 1
#: How soon the step looks again for finished pieces while some are in flight.  Bytewax
#: schedules ``notify_at`` against the wall clock, so this is real time, not the flow's clock.
POLL = timedelta(milliseconds=5)


class StageThreads:
    """One single-thread executor per worker thread, made when that worker first needs it.

    The logic of a key is built by Bytewax without the key, always on the thread of the
    worker that owns the key, so the calling thread names the worker.

    >>> threads = StageThreads()
    >>> threads.executor() is threads.executor()
    True
    >>> threads.shutdown()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executors: dict[int, ThreadPoolExecutor] = {}

    def executor(self) -> ThreadPoolExecutor:
        """The helper of the calling worker thread."""
        me = threading.get_ident()
        with self._lock:
            ex = self._executors.get(me)
            if ex is None:
                ex = self._executors[me] = ThreadPoolExecutor(1, thread_name_prefix=f"{HELPER_THREAD_PREFIX}-{len(self._executors)}")
            return ex

    def shutdown(self) -> None:
        """Stop every helper (their queues are empty once the flow has ended)."""
        with self._lock:
            executors, self._executors = list(self._executors.values()), {}
        for ex in executors:
            ex.shutdown(wait=True)


#: ``Piece.seq`` of a worker's start marker (idle ticks have -1, batches their first offset).
START_SEQ = -2


class _StartPartition(StatelessSourcePartition[Piece[None]]):
    def __init__(self, worker: int) -> None:
        self._marker: Piece[None] | None = Piece("", START_SEQ, 0, 1, None, to=worker)

    def next_batch(self) -> list[Piece[None]]:
        if self._marker is None:
            raise StopIteration()
        marker, self._marker = self._marker, None
        return [marker]


class StartMarkers(DynamicSource[Piece[None]]):
    """One start marker per worker at the start of every execution, and which workers'
    markers have reached the step (a flow's build makes one, so every execution starts
    afresh)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[int] = set()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StartPartition:
        return _StartPartition(worker_index)

    def arrived(self) -> None:
        """The calling worker's marker reached the step."""
        with self._lock:
            self._seen.add(threading.get_ident())

    def started(self) -> bool:
        """Whether the calling worker's marker reached the step."""
        with self._lock:
            return threading.get_ident() in self._seen


@dataclass
class AheadState:
    """The pieces taken in and not yet passed on, oldest first, as they came in."""

    pending: list[Piece[Any]] = field(default_factory=list)


class AheadLogic(StatefulBatchLogic[Piece[Any], Piece[Any], AheadState]):
    """Per worker: run ``fn`` on each piece on the worker's helper thread (``executor``;
    None runs it inline) and pass the results on in arrival order, ``depth`` in flight at
    most; ``wall`` is the clock Bytewax schedules ``notify_at`` against (the wall clock).  Built from a
    snapshot, it passes nothing on before a new piece or its worker's start marker
    (``start``) has come (see the module docstring)."""

    def __init__(
        self,
        step_id: str,
        fn: Callable[[Piece[Any]], Piece[Any]],
        resume: AheadState | None,
        *,
        executor: ThreadPoolExecutor | None,
        start: StartMarkers | None = None,
        depth: int = DEPTH,
        wall: Clock | None = None,
    ) -> None:
        if resume is not None and not isinstance(resume, AheadState):
            raise TypeError(f"step {step_id!r}: resume state is a {type(resume).__name__}, expected AheadState")
        if depth < 1:
            raise ValueError(f"step {step_id!r}: depth must be at least 1, got {depth}")
        self.step_id = step_id
        self._fn = fn
        self._executor = executor
        self._depth = depth
        self._wall = wall or SystemClock()
        self._start = start or StartMarkers()
        self._flight: deque[tuple[Piece[Any], Future[Piece[Any]]]] = deque()
        for piece in resume.pending if resume is not None else ():
            self._submit(piece)
        self._held = bool(self._flight)  # resumed pieces wait for the execution's first epoch

    def _submit(self, piece: Piece[Any]) -> None:
        if not isinstance(piece, Piece):
            raise TypeError(f"step {self.step_id!r}: expected a Piece, received {type(piece).__name__}")
        if self._executor is None:
            done: Future[Piece[Any]] = Future()
            try:
                done.set_result(self._fn(piece))
            except BaseException as exc:  # raised where the result is taken, as from the helper
                done.set_exception(exc)
            self._flight.append((piece, done))
        else:
            self._flight.append((piece, self._executor.submit(self._fn, piece)))

    def _ready(self, *, wait_all: bool = False) -> list[Piece[Any]]:
        """Results in arrival order: the finished ones at the head, and the oldest until at
        most ``depth`` are in flight (all of them with ``wait_all``)."""
        if self._held and not self._start.started():
            return []
        self._held = False
        out: list[Piece[Any]] = []
        flight = self._flight
        while flight and (wait_all or len(flight) > self._depth or flight[0][1].done()):
            out.append(flight.popleft()[1].result())
        return out

    def on_batch(self, values: list[Piece[Any]]) -> tuple[Iterable[Piece[Any]], bool]:
        out: list[Piece[Any]] = []
        for piece in values:
            if isinstance(piece, Piece) and piece.seq == START_SEQ:
                self._start.arrived()
                continue
            self._held = False  # a new piece: this is the execution's first epoch or later
            self._submit(piece)
            out.extend(self._ready())
        out.extend(self._ready())
        return out, not self._flight

    def on_notify(self) -> tuple[Iterable[Piece[Any]], bool]:
        return self._ready(), not self._flight

    def on_eof(self) -> tuple[Iterable[Piece[Any]], bool]:
        out = self._ready(wait_all=True)
        return out, not self._flight  # still held (no marker came): kept for the next execution

    def notify_at(self) -> datetime | None:
        return self._wall.now() + POLL if self._flight else None

    def snapshot(self) -> AheadState:
        return AheadState([piece for piece, _ in self._flight])


#: The helpers of this process's worker threads (flows built in one process share them).
STAGE_THREADS = StageThreads()


@operator
def run_ahead(
    step_id: str,
    up: Stream[Piece[Any]],
    fn: Callable[[Piece[Any]], Piece[Any]],
    *,
    threads: StageThreads | None = STAGE_THREADS,
    workers: int | None = None,
    depth: int = DEPTH,
) -> Stream[Piece[Any]]:
    """``fn`` applied to every piece on its worker's helper thread (of ``threads``; None
    runs it inline on the worker thread), the results passed on in arrival order per worker
    (see the module docstring for the guarantees).  ``workers`` is the cluster's worker
    count (default: :data:`~driftline.operators.spread.WORKERS` when the flow runs)."""

    def key(piece: Piece[Any]) -> str:
        n = spread.WORKERS if workers is None else workers
        return worker_keys(n)[piece.to % n]

    start = StartMarkers()

    def logic(resume: AheadState | None) -> AheadLogic:
        return AheadLogic(step_id, fn, resume, executor=threads.executor() if threads is not None else None, start=start, depth=depth)

    markers = op.input("start", up.flow(), start)
    keyed = op.key_on("key", op.merge("with_start", up, markers), key)
    return op.key_rm("unkey", op.stateful_batch("run", keyed, logic))


__all__ = ["DEPTH", "POLL", "STAGE_THREADS", "START_SEQ", "AheadLogic", "AheadState", "StageThreads", "StartMarkers", "run_ahead"]
