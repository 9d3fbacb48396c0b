"""The exactly-once Parquet writer of one dataset partition (no Bytewax in here).

:class:`DatasetWriter` buffers conformed rows per *group* (one group per Kafka
topic-partition for Kafka-keyed datasets, one group otherwise), commits a group when
it reaches ``flush_rows`` rows or ``flush_bytes`` bytes or when its oldest row has
waited ``flush_seconds``, and exposes its uncommitted rows as a snapshot-able
:class:`WriterState`.

Commit protocol (see docs/datasets.md for the failure analysis):

1. stage every file of the commit under ``_staging/`` and make it durable;
2. create the manifest entry (exclusive create, durable): this is the commit point;
3. publish each staged file under its final Hive path (atomic, never overwriting);
4. remember the committed keys, so replayed rows are skipped and counted.

With ``background=True`` (what the Bytewax sink uses) steps 1-3 of a commit (encoding,
hashing, staging, manifest entry, publishing) run on one process-wide background
thread while the caller goes on: most of that work runs without the GIL (pyarrow's
encoder and zstd), so it overlaps the flow's next micro-batch on another core.  The
guarantees stay those of the synchronous writer: the commits of one writer run in
order, :meth:`DatasetWriter.snapshot`, :meth:`~DatasetWriter.close` and
:meth:`~DatasetWriter.committed` first wait for every pending commit (so a snapshot
never lacks a row whose commit is not finished), at most :data:`MAX_PENDING` commits
per writer are pending (the next one waits), and a failed commit is raised, naming the
step and dataset, by the writer's next call and at the latest by the next snapshot;
after a failure the writer commits nothing more (a later commit could raise a
watermark over the failed one's rows).  The files and manifest entries are the same
bytes either way.

On construction the writer reads the manifest, finishes its interrupted commits
(roll forward), removes its uncommitted temps, learns the committed keys, and filters
the restored buffer against them.

>>> import pyarrow as pa, polars as pl, tempfile
>>> from datetime import datetime, timezone
>>> from driftline.clock import FakeClock
>>> from driftline.config.sinks import SinksConfig
>>> from driftline.sinks.parquet.spec import DatasetSpec, RunInfo
>>> from driftline.sinks.parquet.store import LocalStore
>>> spec = DatasetSpec("demo", pa.schema([("src_topic", pa.string(), False), ("src_partition", pa.int32(), False),
...     ("src_offset", pa.int64(), False), ("event_time", pa.timestamp("ms", "UTC"))]), ("src_topic", "src_partition", "src_offset"), "event_time")
>>> w = DatasetWriter(spec, SinksConfig(flush_rows=2), store=LocalStore(tempfile.mkdtemp()), run_info=RunInfo("0.1.0", "cfg"), clock=FakeClock())
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> w.write(pl.DataFrame({"src_topic": ["t"] * 3, "src_partition": [0] * 3, "src_offset": [0, 1, 2], "event_time": [t] * 3}))
>>> w.flush_due(); w.rows_written, w.buffered_rows
(2, 1)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from driftline.clock import Clock, SystemClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import faults
from driftline.sinks.parquet import metrics as m
from driftline.sinks.parquet.format import SinkSchemaError, conform, encode_parquet
from driftline.sinks.parquet.manifest import (
    STAGING_DIR,
    FileEntry,
    ManifestEntry,
    ManifestError,
    append_entry,
    commit_id,
    kafka_watermarks,
    load_entries,
    roll_forward,
)
from driftline.sinks.parquet.spec import KAFKA_KEY, DatasetSpec, RunInfo
from driftline.sinks.parquet.store import Store

log = logging.getLogger("driftline.sinks.parquet")

ARRIVAL = "__driftline_arrival_us"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_PART = "__driftline_part"
_ALL = "_all"
_TOPIC, _PARTITION, _OFFSET = KAFKA_KEY


def _jlog(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """A JSON-lines log record (see driftline.logs): counts and ids only, never row data."""
    if log.isEnabledFor(level):
        log.log(level, event, extra={"fields": fields})


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return v


@dataclass(frozen=True)
class WriterState:
    """Snapshot of a writer: its uncommitted rows per group, as zstd Arrow IPC bytes."""

    buffers: dict[str, bytes] = field(default_factory=dict)
    version: int = 1


@dataclass
class _Group:
    chunks: list[pl.DataFrame]
    rows: int = 0
    bytes: int = 0
    oldest_us: int | None = None

    def add(self, df: pl.DataFrame) -> None:
        self.chunks.append(df)
        self.rows += df.height
        self.bytes += int(df.estimated_size())
        first = int(df[ARRIVAL].min())  # type: ignore[arg-type]
        self.oldest_us = first if self.oldest_us is None else min(self.oldest_us, first)

    def frame(self) -> pl.DataFrame:
        if len(self.chunks) > 1:
            self.chunks = [pl.concat(self.chunks, how="vertical", rechunk=True)]
        return self.chunks[0]


def _by_topic_partition(df: pl.DataFrame) -> dict[tuple[Any, ...], pl.DataFrame]:
    """``df`` split by Kafka topic-partition, in order of first appearance; a micro-batch
    of one topic-partition (a poll) is returned whole instead of copied."""
    topic, part = df[_TOPIC], df[_PARTITION]
    if topic.null_count() == 0 and part.null_count() == 0 and (topic == topic[0]).all() and (part == part[0]).all():
        return {(topic[0], part[0]): df}
    return df.partition_by([_TOPIC, _PARTITION], as_dict=True, maintain_order=True)


def _increasing(offsets: pl.Series) -> bool:
    """Whether ``offsets`` strictly increase (so no offset repeats)."""
    return offsets.len() < 2 or (offsets.null_count() == 0 and bool((offsets.diff().slice(1) > 0).all()))


MAX_PENDING = 2
"""Background commits a writer may have pending (one running, one queued); the next waits.

Bounds the memory a writer holds beyond its buffer to about one commit's rows."""

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """The process-wide commit thread, started on first use.

    One thread: the commits of a writer must run in order (a later commit raises its
    topic-partition's watermark), one more core is what the flow's worker leaves idle,
    and commits of several datasets then never hold their encoding buffers at once."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-parquet-commit")
        return _EXECUTOR


class SinkCommitError(RuntimeError):
    """A commit failed (encoding, storage, manifest); the message names the step, dataset and commit."""


@dataclass
class _Commit:
    """One commit decided on the caller's thread, to be encoded, staged, recorded and published."""

    rows: pl.DataFrame
    gk: str
    cid: str
    seq: int
    created_at: str
    coverage: dict[str, list[int]]
    oldest_us: int
    started: float = 0.0
    files: list[FileEntry] = field(default_factory=list)


class DatasetWriter:
    """Exactly-once writer of one dataset for one sink partition (``writer_id``).

    ``background``: run the encoding and storage steps of commits on the commit thread
    (see the module docstring); otherwise they run in the caller's thread.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        settings: SinksConfig,
        *,
        store: Store,
        run_info: RunInfo,
        clock: Clock | None = None,
        writer_id: str = "p0",
        step_id: str = "parquet",
        resume: WriterState | None = None,
        gate: Callable[[pl.DataFrame], pl.Series] | None = None,
        background: bool = False,
    ) -> None:
        ds = settings.for_dataset(spec.name)
        if ds.partition_by is not None:
            spec = spec.with_partition_by(tuple(ds.partition_by))
        self.spec = spec
        self.store = store
        self.run_info = run_info
        self.clock: Clock = clock or SystemClock()
        self.writer_id = writer_id
        self.step_id = step_id
        self.gate = gate  # which rows of a commit may go now (the others stay buffered): an ordering hook
        self.flush_rows = ds.flush_rows  # for_dataset() already fills in the section's defaults
        self.flush_bytes = ds.flush_bytes
        self.flush_seconds = ds.flush_seconds
        self.row_group_rows = settings.row_group_rows
        self.compression_level = settings.compression_level
        self.kafka = spec.key_kind == "kafka"
        self.rows_written = 0
        self.rows_replayed = 0
        self.files_committed = 0
        self._groups: dict[str, _Group] = {}
        self.background = background
        self._pending: deque[tuple[Future[None], int]] = deque()  # (commit, its oldest arrival us), in commit order
        self._failed: BaseException | None = None
        self._gauge_rows = 0
        self._labels = m.ROWS_WRITTEN.labels(spec.name), m.ROWS_REPLAYED.labels(spec.name), m.FILES_COMMITTED.labels(spec.name)

        entries = load_entries(store, spec.name)
        report = roll_forward(store, spec.name, entries, writer_id)
        if report.missing:
            raise ManifestError(
                f"step {step_id!r}, dataset {spec.name!r}: the manifest lists {len(report.missing)} committed file(s) that are gone "
                f"(first: {report.missing[0]}); refusing to start so the loss is not hidden; run `driftline verify`"
            )
        if report.published or report.removed_staging:
            _jlog("sink_recovered", dataset=spec.name, writer=writer_id, rolled_forward=len(report.published), removed_temps=len(report.removed_staging))
        self._next_seq = 1 + max((e.seq for e in entries if e.writer == writer_id), default=-1)
        self._watermarks: dict[tuple[str, int], int] = kafka_watermarks(entries) if self.kafka else {}
        self._keys: pl.DataFrame | None = None if self.kafka else self._read_committed_keys(entries)
        if resume is not None:
            for ipc in resume.buffers.values():
                self._accept(pl.read_ipc(io.BytesIO(ipc)))
            _jlog("sink_resumed", dataset=spec.name, writer=writer_id, restored_rows=self.buffered_rows, skipped_committed_rows=self.rows_replayed)
        self._update_gauge()
        m.UNCOMMITTED_AGE.track(self)

    # -- committed-key bookkeeping -------------------------------------------------

    def _key_schema(self) -> dict[str, pl.DataType]:
        probe = pl.from_arrow(self.spec.schema.empty_table())
        assert isinstance(probe, pl.DataFrame)
        return {c: probe.schema[c] for c in self.spec.key_columns}

    def _read_committed_keys(self, entries: list[ManifestEntry]) -> pl.DataFrame:
        schema = self._key_schema()
        frames = [pl.DataFrame(schema=schema)]
        for e in entries:
            for f in e.files:
                data = io.BytesIO(self.store.read(f"{self.spec.name}/{f.path}"))
                present = [c for c in self.spec.key_columns if c in pq.read_schema(data).names]
                df = pl.from_arrow(pq.read_table(data, columns=present))
                assert isinstance(df, pl.DataFrame)
                # a key column added since the file was written (the window datasets' flow) reads as null
                frames.append(df.with_columns(pl.lit(None, schema[c]).alias(c) for c in schema if c not in present).select(list(schema)).cast(schema))  # type: ignore[arg-type]
        return pl.concat(frames, how="vertical").unique()

    def _accept(self, df: pl.DataFrame) -> None:
        """Buffer rows whose key is not committed yet; count the others as replayed."""
        if df.height == 0:
            return
        if self.kafka:
            for (topic, part), sub in _by_topic_partition(df).items():
                wm = self._watermarks.get((str(topic), int(part)))  # type: ignore[arg-type]
                keep = sub if wm is None or int(sub[_OFFSET].min()) > wm else sub.filter(pl.col(_OFFSET) > wm)  # type: ignore[arg-type]
                self._count_replayed(sub.height - keep.height)
                if keep.height:
                    self._groups.setdefault(f"{topic}+{part}", _Group([])).add(keep)
        else:
            assert self._keys is not None
            keep = df.join(self._keys, on=list(self.spec.key_columns), how="anti", nulls_equal=True) if self._keys.height else df
            self._count_replayed(df.height - keep.height)
            if keep.height:
                self._groups.setdefault(_ALL, _Group([])).add(keep)

    def committed(self, keys: pl.DataFrame) -> pl.Series:
        """Per row of ``keys`` (the dataset's key columns), whether that key is committed
        (exact-key datasets only)."""
        if self._keys is None:
            raise TypeError(f"dataset {self.spec.name!r}: committed keys are tracked exactly for window-keyed datasets only")
        self.wait()  # the keys of pending commits are recorded already: they count once committed
        cols = list(self.spec.key_columns)
        found = keys.select(cols).cast(self._key_schema()).with_row_index("__row").join(self._keys, on=cols, how="semi", nulls_equal=True)["__row"]  # type: ignore[arg-type]
        return pl.Series("committed", [False] * keys.height, dtype=pl.Boolean).scatter(found, True) if keys.height else pl.Series("committed", [], dtype=pl.Boolean)

    def _count_replayed(self, n: int) -> None:
        if n > 0:
            self.rows_replayed += n
            self._labels[1].inc(n)

    def _update_gauge(self) -> None:
        now = self.buffered_rows
        m.BUFFERED_ROWS.labels(self.spec.name).inc(now - self._gauge_rows)
        self._gauge_rows = now

    @property
    def buffered_rows(self) -> int:
        return sum(g.rows for g in self._groups.values())

    @property
    def pending_commits(self) -> int:
        """Background commits handed over and not finished yet."""
        return sum(1 for fut, _us in list(self._pending) if not fut.done())

    @property
    def oldest_buffered_us(self) -> int | None:
        """Arrival time (epoch microseconds) of the oldest row not yet committed; None when none is buffered."""
        oldest = [g.oldest_us for g in list(self._groups.values()) if g.rows and g.oldest_us is not None]
        oldest += [us for fut, us in list(self._pending) if not fut.done()]  # rows of a pending commit are not committed yet
        return min(oldest) if oldest else None

    # -- public API ----------------------------------------------------------------

    def write(self, frame: pl.DataFrame) -> None:
        """Conform ``frame`` to the dataset schema and buffer its not-yet-committed rows."""
        self._raise_failed()
        table = conform(frame, self.spec, self.step_id)
        if table.num_rows == 0:
            return
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        now_us = int(self.clock.now().timestamp() * 1_000_000)
        self._accept(df.with_columns(pl.lit(now_us, pl.Int64).alias(ARRIVAL)))
        self._update_gauge()

    def flush_due(self) -> None:
        """Commit every group that reached its row, byte or age threshold."""
        self._raise_failed()
        now_us = int(self.clock.now().timestamp() * 1_000_000)
        for gk in list(self._groups):
            g = self._groups[gk]
            while g.rows and (g.rows >= self.flush_rows or g.bytes >= self.flush_bytes):
                fit = int(self.flush_bytes * g.rows / max(g.bytes, 1))
                before = g.rows
                g = self._commit_group(gk, max(1, min(self.flush_rows, fit)))
                if g.rows >= before:  # the gate held every row back
                    break
            if g.rows and g.oldest_us is not None and now_us - g.oldest_us >= self.flush_seconds * 1_000_000:
                self._commit_group(gk, None)
        self._update_gauge()

    def flush_all(self) -> None:
        """Commit everything buffered (end of a drained run); background commits may still be pending."""
        self._raise_failed()
        for gk in list(self._groups):
            self._commit_group(gk, None)
        self._update_gauge()

    def close(self) -> None:
        """Commit everything, wait for the commits, and log the run's totals (end of a drained run)."""
        self.flush_all()
        self.wait()
        _jlog("sink_closed", dataset=self.spec.name, writer=self.writer_id, rows_written=self.rows_written, rows_replayed=self.rows_replayed, files=self.files_committed)

    def snapshot(self) -> WriterState:
        """The uncommitted rows, so Bytewax's recovery covers them.

        Waits for the pending commits first: their rows are no longer buffered, so the
        snapshot may only be taken once they are committed."""
        self.wait()
        out = {}
        for gk, g in self._groups.items():
            buf = io.BytesIO()
            g.frame().write_ipc(buf, compression="zstd")
            out[gk] = buf.getvalue()
        return WriterState(buffers=out)

    def wait(self) -> None:
        """Wait until every pending background commit is done; raise the first failure."""
        while self._pending:
            self._wait_oldest()
        self._raise_failed()

    def _wait_oldest(self) -> None:
        """Wait for the oldest pending commit (which records its failure instead of raising it)."""
        self._pending[0][0].result()
        self._pending.popleft()

    def _raise_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    # -- committing ----------------------------------------------------------------

    def _commit_group(self, gk: str, limit: int | None) -> _Group:
        g = self._groups[gk]
        df = g.frame()
        if limit is not None and limit < df.height:
            if self.kafka:  # cut on an offset boundary: all rows of one record commit together
                cut = df[_OFFSET][limit - 1]
                take, rest = df.filter(pl.col(_OFFSET) <= cut), df.filter(pl.col(_OFFSET) > cut)
            else:
                take, rest = df.head(limit), df.slice(limit)
        else:
            take, rest = df, df.clear()
        if self.gate is not None and take.height:
            ready = self.gate(take)
            if not ready.all():  # held rows stay buffered (and in the snapshot), ahead of the rest
                take, rest = take.filter(ready), pl.concat([take.filter(~ready), rest], how="vertical")
        self._commit(take, gk)
        new = _Group([])
        if rest.height:
            new.add(rest)
            self._groups[gk] = new
        else:
            del self._groups[gk]
        return new

    def _partition_expr(self) -> pl.Expr:
        fmts = {"date": "date=%Y-%m-%d", "hour": "hour=%H"}
        if not self.spec.partition_by:
            return pl.lit("")
        t = pl.col(self.spec.time_column)
        tz = self.spec.schema.field(self.spec.time_column).type.tz
        if tz not in (None, "UTC", "+00:00", "Etc/UTC"):
            t = t.dt.convert_time_zone("UTC")
        pattern = "/".join(fmts[p] for p in self.spec.partition_by)
        null = "/".join(f"{p}={NULL_PARTITION}" for p in self.spec.partition_by)
        return t.dt.strftime(pattern).fill_null(null)

    def _hive_parts(self, rows: pl.DataFrame) -> dict[tuple[Any, ...], pl.DataFrame]:
        """``rows`` split by Hive partition path (``date=.../hour=...``), in order of first
        appearance; rows of one partition (the usual commit) are returned whole instead of copied."""
        if not self.spec.partition_by:
            return {("",): rows}
        paths = rows.select(self._partition_expr().alias(_PART))[_PART]
        if (paths == paths[0]).all():
            return {(paths[0],): rows}
        runs = paths.rle()  # time-ordered rows: each partition is one run, sliced instead of gathered
        if runs.len() == paths.n_unique():
            out: dict[tuple[Any, ...], pl.DataFrame] = {}
            start = 0
            for length, value in runs.struct.unnest().iter_rows():
                out[(value,)] = rows.slice(start, length)
                start += length
            return out
        return rows.with_columns(paths).partition_by(_PART, as_dict=True, maintain_order=True)

    def _file_name(self, sub: pl.DataFrame, cid: str) -> str:
        if self.kafka:
            return f"{sub[_TOPIC][0]}+{sub[_PARTITION][0]}+{int(sub[_OFFSET].min()):020d}.parquet"  # type: ignore[arg-type]
        first = sub[self.spec.time_column].min()
        stamp = first.strftime("%Y%m%dT%H%M%SZ") if isinstance(first, datetime) else "notime"
        return f"{stamp}+{cid}.parquet"

    def _commit(self, rows: pl.DataFrame, gk: str) -> None:
        """Commit ``rows`` of group ``gk``: now, or handed to the commit thread (``background``)."""
        before = rows.height
        if not (self.kafka and _increasing(rows[_OFFSET])):  # one topic-partition: increasing offsets are unique keys
            rows = rows.unique(subset=list(self.spec.key_columns), keep="first", maintain_order=True)
        self._count_replayed(before - rows.height)
        if rows.height == 0:
            return
        seq = self._next_seq
        self._next_seq += 1
        coverage = {gk: [int(rows[_OFFSET].min()), int(rows[_OFFSET].max())]} if self.kafka else {}  # type: ignore[arg-type]
        c = _Commit(rows, gk, commit_id(self.writer_id, seq), seq, self.clock.now().isoformat(), coverage, int(rows[ARRIVAL].min()))  # type: ignore[arg-type]
        if not self.background:
            self._write_commit(c)
            self._remember(c)
            self._finish(c)
            return
        while len(self._pending) >= MAX_PENDING:  # bounded memory: wait for the oldest
            self._wait_oldest()
        self._raise_failed()
        # Recorded before the files exist: a replayed row of a pending commit is skipped as
        # it would be once committed; a failed commit stops the writer (every later call raises).
        self._remember(c)
        self._pending.append((_executor().submit(self._commit_in_background, c), c.oldest_us))

    def _commit_in_background(self, c: _Commit) -> None:
        """The commit thread's part: nothing after a failed commit of this writer; failures are recorded, not raised."""
        if self._failed is not None:
            return
        try:
            self._write_commit(c)
            self._finish(c)
        except Exception as exc:  # raised in the worker's thread by its next call (wait())
            if isinstance(exc, SinkSchemaError):  # names the step and dataset already
                self._failed = exc
            else:
                err = SinkCommitError(f"step {self.step_id!r}, dataset {self.spec.name!r}: commit {c.cid} of {c.rows.height} row(s) failed: {type(exc).__name__}: {exc}")
                err.__cause__ = exc
                self._failed = err

    def _remember(self, c: _Commit) -> None:
        """Record the keys of a commit, so replayed rows are skipped."""
        if self.kafka:
            topic, _, part = c.gk.rpartition("+")
            self._watermarks[(topic, int(part))] = max(self._watermarks.get((topic, int(part)), -1), c.coverage[c.gk][1])
        else:
            assert self._keys is not None
            self._keys = pl.concat([self._keys, c.rows.select(self.spec.key_columns)], how="vertical")

    def _write_commit(self, c: _Commit) -> None:
        """Steps 1-3 of the protocol: stage every file durably, create the manifest entry, publish."""
        c.started = time.perf_counter()
        name = self.spec.name
        parts = self._hive_parts(c.rows)
        files: list[FileEntry] = []
        for i, (pkey, sub) in enumerate(sorted(parts.items(), key=lambda kv: str(kv[0][0]))):
            pvalue = str(pkey[0])
            key_ranges = {col: [_jsonable(sub[col].min()), _jsonable(sub[col].max())] for col in self.spec.key_columns}
            table = conform(sub, self.spec, self.step_id)
            data = encode_parquet(
                table,
                row_group_rows=self.row_group_rows,
                compression_level=self.compression_level,
                metadata={
                    "driftline.dataset": name,
                    "driftline.commit_id": c.cid,
                    "driftline.schema_fingerprint": self.spec.fingerprint,
                    "driftline.key_ranges": json.dumps(key_ranges, sort_keys=True),
                    "driftline.pipeline_version": self.run_info.pipeline_version,
                    "driftline.config_hash": self.run_info.config_hash,
                },
            )
            num_rows = table.num_rows
            del table
            staged = f"{STAGING_DIR}/{c.cid}-{i}.parquet.tmp"
            fname = self._file_name(sub, c.cid)
            path = f"{pvalue}/{fname}" if pvalue else fname
            if faults.armed("mid_write"):
                self.store.write_durable(f"{name}/{staged}", data[: len(data) // 2])
                faults.reached("mid_write", name)
            self.store.write_durable(f"{name}/{staged}", data)
            partition = dict(kv.split("=", 1) for kv in pvalue.split("/")) if pvalue else {}
            files.append(FileEntry(path, staged, num_rows, len(data), hashlib.sha256(data).hexdigest(), key_ranges, partition))
            del data
        entry = ManifestEntry(
            dataset=name,
            commit_id=c.cid,
            writer=self.writer_id,
            seq=c.seq,
            created_at=c.created_at,
            files=tuple(files),
            coverage=c.coverage,
            schema_fingerprint=self.spec.fingerprint,
            pipeline_version=self.run_info.pipeline_version,
            config_hash=self.run_info.config_hash,
            model_versions=dict(self.run_info.model_versions),
        )
        faults.reached("before_manifest", name)
        append_entry(self.store, entry)
        faults.reached("after_manifest", name)
        for f in files:
            self.store.publish(f"{name}/{f.staged}", f"{name}/{f.path}")
        c.files = files

    def _finish(self, c: _Commit) -> None:
        """After the commit: the fault point, counters, metrics and the log record."""
        name = self.spec.name
        files = c.files
        faults.reached("after_publish", name)
        nbytes = sum(f.bytes for f in files)
        self.rows_written += c.rows.height
        self.files_committed += len(files)
        self._labels[0].inc(c.rows.height)
        self._labels[2].inc(len(files))
        m.BYTES_WRITTEN.labels(name).inc(nbytes)
        elapsed = time.perf_counter() - c.started
        m.COMMIT_SECONDS.labels(name).observe(elapsed)
        lag = self.clock.now().timestamp() - c.oldest_us / 1_000_000
        m.COMMIT_LAG_SECONDS.labels(name).observe(max(lag, 0.0))
        _jlog("sink_commit", logging.DEBUG, dataset=name, commit_id=c.cid, files=len(files), rows=c.rows.height, bytes=nbytes, seconds=round(elapsed, 4), oldest_wait_s=round(max(lag, 0.0), 3))
