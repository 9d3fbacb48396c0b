"""The Bytewax side: a ``FixedPartitionedSink`` of Polars micro-batches.

Delivery guarantee: **exactly-once per natural key**, given Bytewax recovery.  Each
partition's snapshot holds its uncommitted rows, so every row is either committed or
covered by the snapshot Bytewax resumes from (nothing is lost); a row whose key is
already committed (replayed after a crash) is skipped and counted in
``driftline_sink_rows_replayed_total`` (nothing is duplicated).  Without a recovery
folder a crash loses the buffered rows (at most ``flush_seconds`` worth) but still
never duplicates committed ones.

Time-based flushes run when items arrive: the Kafka source emits an empty micro-batch
every ``kafka.idle_tick_ms`` while idle, and :func:`parquet_output` forwards it to
every sink partition.

Ordering between datasets (:class:`CommitAfter`): a row of one dataset can be made to
commit only once the row of another dataset it refers to is committed (an alert after
its window's ``metrics`` row), so no reader, and no crash without a recovery folder,
ever leaves the first without the second.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Stream, operator
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from driftline.clock import Clock, SystemClock
from driftline.config.sinks import SinksConfig
from driftline.operators.placement import cover_part
from driftline.sinks.parquet.manifest import live_files
from driftline.sinks.parquet.spec import KAFKA_KEY, DatasetSpec, RunInfo, writer_id
from driftline.sinks.parquet.store import Store, open_store
from driftline.sinks.parquet.writer import DatasetWriter, WriterState

# The writers built in this process, by (root, dataset, writer id), with their thread:
# what a CommitAfter gate looks for first.
_WRITERS: dict[tuple[str, str, str], tuple[DatasetWriter, int]] = {}


class CommitAfter:
    """An ordering hook: rows commit only once the row of ``dataset`` with the same
    ``columns`` (that dataset's natural key) is committed; the others stay buffered (and
    in the snapshot) until then.

    The gate asks that dataset's writer of the same partition when it runs in this thread
    (committing its buffered rows first if they are what is missing), else reads the
    keys committed to that dataset's live files.
    """

    def __init__(self, dataset: str, columns: tuple[str, ...]) -> None:
        self.dataset = dataset
        self.columns = columns

    def gate(self, root: str, store: Store, writer_id: str) -> Any:
        """The gate of one writer (``DatasetWriter(gate=...)``)."""
        seen: set[str] = set()
        found: list[pl.DataFrame] = []

        def from_files(keys: pl.DataFrame) -> pl.Series:
            for path in live_files(store, self.dataset):
                if path not in seen:
                    seen.add(path)
                    found.append(pl.read_parquet(io.BytesIO(store.read(path)), columns=list(self.columns)))
            committed = pl.concat([f.cast(keys.schema) for f in found], how="vertical") if found else keys.clear()  # type: ignore[arg-type]
            hits = keys.with_row_index("__row").join(committed, on=list(self.columns), how="semi", nulls_equal=True)["__row"]
            return pl.Series("committed", [False] * keys.height, dtype=pl.Boolean).scatter(hits, True)

        def ready(rows: pl.DataFrame) -> pl.Series:
            keys = rows.select(self.columns)
            live = _WRITERS.get((root, self.dataset, writer_id))
            if live is None or live[1] != threading.get_ident():
                return from_files(keys)
            writer = live[0]
            ok = writer.committed(keys)
            if not ok.all() and writer.buffered_rows:
                writer.flush_all()  # the rows they refer to are buffered: commit them first
                ok = writer.committed(keys)
            return ok

        return ready


class ParquetSinkPartition(StatefulSinkPartition[pl.DataFrame, WriterState]):
    """One sink partition: a :class:`DatasetWriter` driven by Bytewax.

    Its writer commits in the background unless the sink says otherwise (the worker
    goes on while a file is encoded); ``snapshot`` waits for the pending commits, so
    every row is committed or in the snapshot, and raises a failed commit at the latest
    there.
    """

    def __init__(self, writer: DatasetWriter, root: str = "") -> None:
        self.writer = writer
        self.root = root

    def write_batch(self, values: list[pl.DataFrame]) -> None:
        for frame in values:
            self.writer.write(frame)
        self.writer.flush_due()

    def snapshot(self) -> WriterState:
        return self.writer.snapshot()

    def close(self) -> None:
        self.writer.close()
        key = (self.root, self.writer.spec.name, self.writer.writer_id)
        if _WRITERS.get(key, (None,))[0] is self.writer:
            del _WRITERS[key]


class ParquetDatasetSink(FixedPartitionedSink[pl.DataFrame, WriterState]):
    """Exactly-once, immutable Parquet output of one dataset (see module docstring).

    Items are ``(partition key, pl.DataFrame)`` pairs; use :func:`parquet_output`,
    which keys micro-batches by Kafka topic-partition and fans idle ticks out.  Sink
    partition ``N`` writes as :func:`~driftline.sinks.parquet.spec.writer_id`
    ``(writer_name, N)``: give every pipeline writing under one root its own
    ``writer_name`` (the flows use ``<flow>.<input topic>``).  ``background``: encode
    and store commits on the commit thread (see :mod:`driftline.sinks.parquet.writer`).

    >>> import pyarrow as pa, tempfile
    >>> from driftline.config.sinks import SinksConfig
    >>> spec = DatasetSpec("doc_sink", pa.schema([("src_topic", pa.string(), False), ("src_partition", pa.int32(), False),
    ...     ("src_offset", pa.int64(), False), ("event_time", pa.timestamp("ms", "UTC"))]), KAFKA_KEY, "event_time")
    >>> sink = ParquetDatasetSink(spec, SinksConfig(root=tempfile.mkdtemp()), run_info=RunInfo("0.1.0", "abc"))
    >>> sink.list_parts()
    ['0']
    """

    def __init__(
        self,
        spec: DatasetSpec,
        settings: SinksConfig,
        *,
        run_info: RunInfo,
        clock: Clock | None = None,
        store: Store | None = None,
        writer_name: str | None = None,
        commit_after: CommitAfter | None = None,
        background: bool = True,
    ) -> None:
        self.spec = spec
        self.background = background
        self.writer_name = writer_name
        writer_id(writer_name, 0)  # a bad name fails here, at start-up
        self.settings = settings
        self.run_info = run_info
        self.clock = clock or SystemClock()
        self.store = store or open_store(settings.root, settings.fsspec_options(), fsync=settings.fsync)
        self.parts = settings.partitions
        self.commit_after = commit_after
        ds = settings.for_dataset(spec.name)
        if ds.partition_by is not None:  # fail fast on contradictions with the schema
            spec.with_partition_by(tuple(ds.partition_by))

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.parts)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: WriterState | None) -> ParquetSinkPartition:
        if resume_state is not None and not isinstance(resume_state, WriterState):
            raise TypeError(f"step {step_id!r}: resume state of partition {for_part} is a {type(resume_state).__name__}, expected WriterState")
        wid = writer_id(self.writer_name, for_part)
        gate = self.commit_after.gate(self.settings.root, self.store, wid) if self.commit_after else None
        writer = DatasetWriter(
            self.spec,
            self.settings,
            store=self.store,
            run_info=self.run_info,
            clock=self.clock,
            writer_id=wid,
            step_id=step_id,
            resume=resume_state,
            gate=gate,
            background=self.background,
        )
        _WRITERS[(self.settings.root, self.spec.name, wid)] = (writer, threading.get_ident())
        return ParquetSinkPartition(writer, self.settings.root)

    def route(self, frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
        """Key a micro-batch for the sink partitions; every partition gets an item (maybe empty)."""
        if not isinstance(frame, pl.DataFrame):
            raise TypeError(f"dataset {self.spec.name!r}: expected a polars.DataFrame micro-batch, received {type(frame).__name__}")
        if self.parts == 1:
            return [("0", frame)]
        empty = frame.clear()
        if self.spec.key_kind != "kafka" or frame.height == 0:
            return [("0", frame)] + [(str(i), empty) for i in range(1, self.parts)]
        topic, part = KAFKA_KEY[0], KAFKA_KEY[1]
        tps = frame.select(topic, part).unique()
        mapping = pl.DataFrame(
            {
                topic: tps[topic],
                part: tps[part],
                "__sink_part": [cover_part(f"{t}+{p}", self.parts) for t, p in tps.iter_rows()],
            },
            schema_overrides={topic: tps.schema[topic], part: tps.schema[part]},
        )
        routed = frame.join(mapping, on=[topic, part], how="left").partition_by("__sink_part", as_dict=True, include_key=False)
        out: list[tuple[str, Any]] = []
        for i in range(self.parts):
            out.append((str(i), routed.get((i,), empty)))
        return out


@operator
def parquet_output(step_id: str, up: Stream[pl.DataFrame], sink: ParquetDatasetSink) -> None:
    """Write a stream of Polars micro-batches to an exactly-once Parquet dataset.

    ``step_id`` names the step; errors raised while writing name it, the dataset and
    the offending column.

    >>> import pyarrow as pa, tempfile, polars as pl
    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSource, run_main
    >>> from driftline.config.sinks import SinksConfig
    >>> schema = pa.schema([("src_topic", pa.string(), False), ("src_partition", pa.int32(), False),
    ...     ("src_offset", pa.int64(), False), ("event_time", pa.timestamp("ms", "UTC"))])
    >>> spec = DatasetSpec("doc_out", schema, KAFKA_KEY, "event_time", partition_by=())
    >>> sink = ParquetDatasetSink(spec, SinksConfig(root=tempfile.mkdtemp()), run_info=RunInfo("0.1.0", "abc"))
    >>> flow = Dataflow("doc")
    >>> frames = op.input("in", flow, TestingSource([pl.DataFrame({"src_topic": ["t"], "src_partition": [0], "src_offset": [5], "event_time": [None]})]))
    >>> parquet_output("out", frames, sink)
    >>> run_main(flow)
    >>> sorted(p.rsplit("/", 1)[-1] for p in sink.store.list_files("doc_out") if p.endswith(".parquet"))
    ['t+0+00000000000000000005.parquet']
    """
    keyed = op.flat_map("route", up, sink.route)
    op.output("write", keyed, sink)
