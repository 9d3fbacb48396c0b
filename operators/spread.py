"""Spread the rows of each input partition over every worker, then put them back in order.

A Kafka source partition is read by one worker, so with 3 partitions and 2 workers the
reading splits 2:1 and so would everything after it.  The stateless stages (decode,
validation, masking, features) do not care where a row runs, the model step and the
windows do: they decide per input partition in offset order (budgets, batching,
watermarks).  So each micro-batch travels as one or more row ranges (:class:`Piece`) that
:func:`to_workers` sends to the worker :class:`Spreader` picked for it (the one that
evens out the workers' loads), while a small :class:`BatchHeader` per batch
travels from the reading worker straight to the worker of the partition's key; there
:class:`ReorderLogic` releases the processed pieces batch by batch in the order of the
headers, each batch's pieces in row order.

Why the order is exact: the headers of one partition all leave the one worker that
reads it, over one channel, so they arrive in the order they were sent; a batch is
released once its header and all its pieces are in, and never before the batches whose
headers came earlier.  A batch's pieces may come epochs after its header (the enrich flow
runs its stages on a helper thread, :mod:`driftline.operators.ahead`, whose snapshot holds
the pieces still in flight): the headers still waiting and the pieces that came early are
the step's snapshot, so a rescale or a restart resumes them.

>>> import polars as pl
>>> frame = pl.DataFrame({"src_topic": ["t"] * 6, "src_partition": [1] * 6, "src_offset": [10, 11, 12, 13, 14, 15]})
>>> items = split_rows(frame, 2, workers=3)
>>> [type(i).__name__ for i in items], items[0].count
(['BatchHeader', 'Piece', 'Piece', 'Piece'], 3)
>>> logic = ReorderLogic("reorder", None)
>>> out, _ = logic.on_batch([items[3], items[2]])  # pieces before their header: held
>>> out
[]
>>> out, discard = logic.on_batch([items[0], items[1]])
>>> [f["src_offset"].to_list() for f in out], discard
([[10, 11], [12, 13], [14, 15]], True)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from driftline.operators.placement import COSTS, free_shares, local_plan, reorder_key, state_worker, worker_keys

T = TypeVar("T")
U = TypeVar("U")

#: Rows per piece at least.  Every stage call has a fixed cost of milliseconds whatever its
#: size (a few dozen Polars expressions each; on 100-row batches, one process: mask_pii about
#: 22 ms, features 12 ms, validate 5 ms, sanitize 4 ms, decode 4 ms), so cutting a default
#: 5,000-row poll into 8 pieces of 625 rows doubled the cluster's CPU per event (149 -> 273 µs
#: on 2 processes) and a second process bought no speed.  Whole polls spread over the
#: workers instead, and a poll is cut only when it is big enough (``kafka.poll_batch_size``
#: raised) that each piece still has this many rows.
PIECE_ROWS = 5000
#: Workers of the whole cluster this process belongs to (set by :func:`driftline.runner.run_flow`
#: before the flow starts).  With one worker nothing is cut: on one worker it buys nothing.
WORKERS = 1

_SEQ = itertools.count()


@dataclass(frozen=True)
class BatchHeader:
    """Announces batch ``seq`` of partition ``key``: ``count`` pieces follow."""

    key: str
    seq: int
    count: int


@dataclass(frozen=True)
class Piece(Generic[T]):
    """Rows ``index`` of ``count`` of batch ``seq`` of partition ``key`` (``value``: the rows, then what a stage made of them).

    An idle tick (an empty micro-batch) is a piece with ``seq`` -1 and no header: it is
    released at once wherever it lands.
    """

    key: str
    seq: int
    index: int
    count: int
    value: T
    #: the worker (cluster-wide index) the piece's stateless stages run on (see :class:`Spreader`)
    to: int = 0

    def map(self, fn: Callable[[T], U]) -> Piece[U]:
        """The same piece holding ``fn(value)``."""
        return replace(self, value=fn(self.value))  # type: ignore[return-value]


def partition_key(frame: Any) -> str:
    """The routing key of a raw batch: ``topic:partition`` of its first row (the model step's key)."""
    if isinstance(frame, pl.DataFrame) and frame.height and "src_topic" in frame.columns and "src_partition" in frame.columns:
        return f"{frame['src_topic'][0]}:{frame['src_partition'][0]}"
    return "unpartitioned"


def split_rows(batch: Any, rows: int = PIECE_ROWS, workers: int | None = None) -> list[BatchHeader | Piece[Any]]:
    """A header and the pieces of one raw micro-batch (a frame of one partition, or a list of records).

    With several ``workers`` (default: :data:`WORKERS`), frames of at least twice ``rows``
    rows are cut into ranges of at least ``rows`` rows, at most one per worker; smaller
    frames, lists (tests' record batches) and the batches of a single worker stay whole
    (and still go to any worker).
    """
    n = len(batch)
    if n == 0:
        return [Piece("", -1, 0, 1, batch)]
    key = partition_key(batch)
    seq = int(batch["src_offset"][0]) if isinstance(batch, pl.DataFrame) and "src_offset" in batch.columns else next(_SEQ)
    workers = WORKERS if workers is None else workers
    if not isinstance(batch, pl.DataFrame) or workers < 2 or n < 2 * rows:
        return [BatchHeader(key, seq, 1), Piece(key, seq, 0, 1, batch)]
    count = min(n // rows, workers)
    bounds = [n * i // count for i in range(count + 1)]
    return [BatchHeader(key, seq, count), *(Piece(key, seq, i, count, batch.slice(bounds[i], bounds[i + 1] - bounds[i])) for i in range(count))]


@dataclass
class ReorderState:
    """Headers still waiting for pieces, in arrival order, and the pieces that came early."""

    headers: list[BatchHeader] = field(default_factory=list)
    pieces: dict[tuple[int, int], Any] = field(default_factory=dict)


class ReorderLogic(StatefulBatchLogic[Any, Any, ReorderState]):
    """Per partition key: release processed pieces batch by batch in header order (see module docstring)."""

    def __init__(self, step_id: str, resume: ReorderState | None) -> None:
        if resume is not None and not isinstance(resume, ReorderState):
            raise TypeError(f"step {step_id!r}: resume state is a {type(resume).__name__}, expected ReorderState")
        self.step_id = step_id
        self.state = resume or ReorderState()

    def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
        out: list[Any] = []
        st = self.state
        for v in values:
            if isinstance(v, BatchHeader):
                st.headers.append(v)
            elif isinstance(v, Piece):
                if v.seq < 0:
                    out.append(v.value)  # an idle tick: no order to keep
                else:
                    st.pieces[(v.seq, v.index)] = v.value
            else:
                raise TypeError(f"step {self.step_id!r}: expected a BatchHeader or a Piece, received {type(v).__name__}")
        while st.headers and all((st.headers[0].seq, i) in st.pieces for i in range(st.headers[0].count)):
            head = st.headers.pop(0)
            out.extend(st.pieces.pop((head.seq, i)) for i in range(head.count))
        return out, not st.headers and not st.pieces

    def snapshot(self) -> ReorderState:
        return ReorderState(list(self.state.headers), dict(self.state.pieces))


class Spreader:
    """Cuts a flow's raw micro-batches (:func:`split_rows`) and picks each piece's worker.

    The work after ``reorder`` and the sink partitions sit where Bytewax puts their keys
    (see :mod:`driftline.operators.placement`), which is rarely even: with 3 input
    partitions on 2 workers one worker may carry every partition's model calls.  The
    pieces fill the gaps: each worker runs the share of rows that evens out the expected
    loads (:func:`~driftline.operators.placement.free_shares`, computed once the input
    partitions are known), and a partition's rows stay on the worker of its ``reorder``
    key as far as that worker's share allows (:func:`~driftline.operators.placement.local_plan`:
    a processed piece is a wide frame, and each one that runs elsewhere crosses back).
    Each partition's pieces go to the worker furthest below its planned share so far.  An
    idle tick goes to the worker of its ``reorder`` key.  ``workers`` is the cluster's
    (default: :data:`WORKERS` when the first batch comes); ``partitions`` lists the input
    partitions (``topic+partition``), or is called for them on the first batch; an empty
    list spreads evenly.  The worker threads of a process share one spreader: its only
    state is the rows given out per partition (each partition has one reader), a
    balancing aid that starts again from zero after a restart.

    >>> frame = pl.DataFrame({"src_topic": ["t"] * 6, "src_partition": [0] * 6, "src_offset": range(6)})
    >>> spreader = Spreader(["t+0", "t+1", "t+2"], workers=2, rows=1000)
    >>> [round(s, 2) for s in spreader.shares()]
    [0.33, 0.67]
    >>> {k: [round(s, 2) for s in spreader.plan(k)] for k in ("t:0", "t:1", "t:2")}
    {'t:0': [0.0, 1.0], 't:1': [1.0, 0.0], 't:2': [0.0, 1.0]}
    >>> [spreader.split(frame.slice(i, 1))[1].to for i in range(6)]
    [1, 1, 1, 1, 1, 1]
    >>> one = Spreader(["t+0"], workers=2, rows=1000)  # one partition: its worker keeps its share, the other runs the rest
    >>> [round(s, 2) for s in one.plan("t:0")], [one.split(frame.slice(i, 1))[1].to for i in range(6)]
    ([0.5, 0.5], [0, 1, 0, 1, 0, 1])
    """

    def __init__(
        self,
        partitions: Iterable[str] | Callable[[], Iterable[str]] = (),
        *,
        workers: int | None = None,
        rows: int = PIECE_ROWS,
        parquet_parts: int = 1,
        kafka_parts: int = 1,
        costs: Mapping[str, float] = COSTS,
    ) -> None:
        self._partitions = partitions
        self._workers = workers
        self.rows = rows
        self.parquet_parts, self.kafka_parts, self.costs = parquet_parts, kafka_parts, costs
        self._shares: list[float] | None = None
        self._plan: dict[str, list[float]] = {}  # per partition key: its rows' share on each worker
        self._sent: dict[str, list[float]] = {}  # rows given to each worker, per input partition (one reader each)

    @property
    def workers(self) -> int:
        return self._workers if self._workers is not None else WORKERS

    def shares(self) -> list[float]:
        """Each worker's share of the rows of the stateless stages (summing to 1)."""
        if self._shares is None or len(self._shares) != self.workers:
            names = list(self._partitions() if callable(self._partitions) else self._partitions)
            self._shares = free_shares(names, self.workers, parquet_parts=self.parquet_parts, kafka_parts=self.kafka_parts, costs=self.costs)
            self._plan = local_plan({k: state_worker(k, self.workers) for k in map(reorder_key, names)}, self._shares)
        return self._shares

    def plan(self, key: str) -> list[float]:
        """The share of partition ``key``'s rows each worker runs (:func:`~driftline.operators.placement.local_plan`;
        a partition not listed at start: the overall shares)."""
        shares = self.shares()
        return self._plan.get(key, shares)

    def split(self, batch: Any) -> list[BatchHeader | Piece[Any]]:
        """:func:`split_rows` of ``batch``, each piece addressed to its worker."""
        items = split_rows(batch, self.rows, self.workers)
        if self.workers < 2:
            return items
        out: list[BatchHeader | Piece[Any]] = []
        for item in items:
            if isinstance(item, Piece):
                if item.seq < 0:
                    item = replace(item, to=state_worker(item.key, self.workers))
                else:
                    shares = self.plan(item.key)
                    sent = self._sent.setdefault(item.key, [0.0] * len(shares))
                    n = len(item.value)
                    total = sum(sent) + n
                    to = max(range(len(shares)), key=lambda w: shares[w] * total - sent[w])
                    sent[to] += n
                    item = replace(item, to=to)
            out.append(item)
        return out


class _PassLogic(StatefulBatchLogic[Any, Any, None]):
    """Passes values on and keeps nothing: a key's only use is where Bytewax runs it."""

    def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
        return values, True

    def snapshot(self) -> None:
        return None


@operator
def to_workers(step_id: str, up: Stream[Piece[Any]], workers: int | None = None) -> Stream[Piece[Any]]:
    """Send each piece to worker ``piece.to`` (of ``workers``, default :data:`WORKERS` when
    the flow runs), through a stateful pass-through step keyed by one key per worker
    (:func:`~driftline.operators.placement.worker_keys`); it keeps no state.

    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> flow, out = Dataflow("doc"), []
    >>> pieces = op.input("in", flow, TestingSource([Piece("t:0", 0, 0, 1, "rows", to=0)]))
    >>> op.output("out", to_workers("to_workers", pieces, workers=1), TestingSink(out))
    >>> run_main(flow)
    >>> [p.value for p in out]
    ['rows']
    """

    def key(piece: Piece[Any]) -> str:
        n = WORKERS if workers is None else workers
        return worker_keys(n)[piece.to % n]

    keyed = op.key_on("key", up, key)
    return op.key_rm("unkey", op.stateful_batch("route", keyed, lambda _resume: _PassLogic()))


__all__ = ["PIECE_ROWS", "WORKERS", "BatchHeader", "Piece", "ReorderLogic", "ReorderState", "Spreader", "partition_key", "split_rows", "to_workers"]
