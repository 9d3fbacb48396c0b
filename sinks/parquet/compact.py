"""Compaction: merge the small committed files of a partition into files of about
``row_group_rows`` rows, with the sinks' commit protocol, then vacuum what they replaced.

Small files are the price of a bounded commit lag (a file per topic-partition every
``flush_seconds``); each one costs a reader an open, a footer read and a row group.
:func:`compact_dataset` rewrites them, safely while the flow keeps writing:

1. **Recover** its own interrupted work (``roll_forward`` of writer ``compact``).
2. **Vacuum** retired files whose retirement is older than ``retention``.
3. **Plan**: live files committed more than ``older_than`` ago and smaller than half the
   target are grouped by Hive partition, Kafka topic-partition (for Kafka-keyed
   datasets) and lineage (schema fingerprint, pipeline version, config hash, model
   versions), ordered by key, and packed into bins of at most ``target_rows`` rows.
4. **Commit** one entry per group, exactly as a sink commits: every merged file is
   staged and made durable (its inputs' SHA-256 checked first), the manifest entry
   ``compact-<seq>`` is created exclusively (the commit point) listing the new files and
   *retiring* the old ones, then the new files are published with ``link()``.

The flow's writers and the compactor never clash: entries are ``p<N>-<seq>`` versus
``compact-<seq>``, staged temps are named after their entry, and merged files carry the
compaction's commit id (``<topic>+<partition>+<first offset>+compact-<seq>.parquet``).
Committed files are never changed; a writer's offset watermarks come from its own
entries, which stay as written.  Readers that take the file list from the manifest
(``driftline query``, ``report``, :func:`driftline.sinks.parquet.manifest.load_entries`)
see the old files until the new ones are published and the new ones afterwards: the
same rows at every moment.

>>> import pyarrow as pa, polars as pl, tempfile
>>> from datetime import datetime, timezone
>>> from driftline.clock import FakeClock
>>> from driftline.config.sinks import SinksConfig
>>> from driftline.sinks.parquet.spec import DatasetSpec, RunInfo
>>> from driftline.sinks.parquet.store import LocalStore
>>> from driftline.sinks.parquet.writer import DatasetWriter
>>> spec = DatasetSpec("demo", pa.schema([("src_topic", pa.string(), False), ("src_partition", pa.int32(), False),
...     ("src_offset", pa.int64(), False), ("event_time", pa.timestamp("ms", "UTC"))]), ("src_topic", "src_partition", "src_offset"), "event_time")
>>> store, clock = LocalStore(tempfile.mkdtemp()), FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
>>> w = DatasetWriter(spec, SinksConfig(flush_rows=2), store=store, run_info=RunInfo("0.1.0", "cfg"), clock=clock)
>>> w.write(pl.DataFrame({"src_topic": ["t"] * 6, "src_partition": [0] * 6, "src_offset": range(6), "event_time": [clock.now()] * 6}))
>>> w.flush_due(); w.files_committed
3
>>> r = compact_dataset(store, "demo", target_rows=1024, older_than=timedelta(0), retention=timedelta(0), clock=clock)
>>> (r.files_before, r.files_after, r.rows, r.vacuumed)
(3, 1, 6, 3)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from driftline.clock import Clock, SystemClock
from driftline.sinks.parquet import faults
from driftline.sinks.parquet.format import encode_parquet
from driftline.sinks.parquet.manifest import (
    COMPACT_FORMAT_VERSION,
    COMPACT_WRITER,
    STAGING_DIR,
    FileEntry,
    ManifestEntry,
    ManifestError,
    RetiredFile,
    append_entry,
    commit_id,
    load_entries,
    roll_forward,
    split_view,
)
from driftline.sinks.parquet.spec import KAFKA_KEY
from driftline.sinks.parquet.store import Store
from driftline.sinks.parquet.writer import _jsonable

log = logging.getLogger("driftline.sinks.parquet.compact")

SMALL_FRACTION = 0.5
"""A file is *small* (worth merging) below this share of the target rows."""


@dataclass
class CompactionResult:
    """What one :func:`compact_dataset` run did (counts only)."""

    dataset: str
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    commits: int = 0
    retired: int = 0
    vacuumed: int = 0
    rolled_forward: int = 0
    skipped_young: int = 0
    skipped_corrupt: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    entry: ManifestEntry
    file: FileEntry

    @property
    def order(self) -> Any:
        offset = self.file.key_ranges.get(KAFKA_KEY[2])
        return (int(offset[0]) if offset else 0, self.entry.writer, self.entry.seq, self.file.path)


def _created(entry: ManifestEntry) -> datetime:
    return datetime.fromisoformat(entry.created_at)


def _is_kafka(f: FileEntry) -> bool:
    return all(k in f.key_ranges for k in KAFKA_KEY)  # entries store key_ranges with sorted keys


def _group_key(c: _Candidate) -> tuple[str, ...]:
    folder = c.file.path.rsplit("/", 1)[0] if "/" in c.file.path else ""
    tp = ""
    if _is_kafka(c.file):
        tp = f"{c.file.key_ranges[KAFKA_KEY[0]][0]}+{c.file.key_ranges[KAFKA_KEY[1]][0]}"
    e = c.entry
    return (folder, tp, e.schema_fingerprint, e.pipeline_version, e.config_hash, json.dumps(e.model_versions, sort_keys=True))


def _bins(files: list[_Candidate], target_rows: int) -> list[list[_Candidate]]:
    """Consecutive files packed into bins of at most ``target_rows`` rows; single-file bins dropped."""
    out: list[list[_Candidate]] = []
    cur: list[_Candidate] = []
    rows = 0
    for c in files:
        if cur and rows + c.file.rows > target_rows:
            out.append(cur)
            cur, rows = [], 0
        cur.append(c)
        rows += c.file.rows
    out.append(cur)
    return [b for b in out if len(b) > 1]


def _key_ranges(table: pa.Table, columns: list[str]) -> dict[str, list[Any]]:
    keys = pl.from_arrow(table.select(columns))
    assert isinstance(keys, pl.DataFrame)
    return {c: [_jsonable(keys[c].min()), _jsonable(keys[c].max())] for c in columns}


def vacuum(store: Store, dataset: str, *, retention: timedelta, now: datetime, entries: list[ManifestEntry] | None = None) -> int:
    """Remove files retired by an effective compaction at least ``retention`` ago; returns how many.

    Readers that listed the files before the compaction may still be reading them: the
    retention is their grace period (as Delta Lake's and Iceberg's vacuum).  Removing is
    idempotent, so a crash part-way is finished by the next run.
    """
    raw = entries if entries is not None else load_entries(store, dataset, live=False)
    view = split_view(store, dataset, raw)
    removed = 0
    for path, by in sorted(view.retired.items()):
        if now - _created(by) < retention:
            continue
        full = f"{dataset}/{path}"
        if store.exists(full):
            store.remove(full)
            removed += 1
    return removed


def compact_dataset(
    store: Store,
    dataset: str,
    *,
    target_rows: int,
    older_than: timedelta,
    retention: timedelta,
    compression_level: int = 3,
    clock: Clock | None = None,
    on_file: Callable[[int], None] | None = None,
) -> CompactionResult:
    """Merge small files of ``dataset`` (see the module docstring); ``on_file(n)`` reports progress."""
    clock = clock or SystemClock()
    res = CompactionResult(dataset)
    raw = load_entries(store, dataset, live=False)
    ever_retired = {r.path for e in raw for r in e.retires}
    own = [e for e in raw if e.writer == COMPACT_WRITER]
    recovered = roll_forward(store, dataset, [_without(e, ever_retired) for e in own], COMPACT_WRITER)
    if recovered.missing:
        raise ManifestError(f"dataset {dataset!r}: compacted file(s) listed by the manifest are gone (first: {recovered.missing[0]}); run `driftline verify`")
    res.rolled_forward = len(recovered.published)
    now = clock.now()
    res.vacuumed = vacuum(store, dataset, retention=retention, now=now, entries=raw)

    view = split_view(store, dataset, raw)
    live = [_Candidate(e, f) for e in raw for f in e.files if (e.commit_id, f.path) in view.live]
    res.files_before = res.files_after = len(live)
    groups: dict[tuple[str, ...], list[_Candidate]] = {}
    for c in live:
        if c.file.rows >= target_rows * SMALL_FRACTION:
            continue
        if now - _created(c.entry) < older_than:
            res.skipped_young += 1
            continue
        groups.setdefault(_group_key(c), []).append(c)
    seq = 1 + max((e.seq for e in own), default=-1)
    for key in sorted(groups):
        bins = _bins(sorted(groups[key], key=lambda c: c.order), target_rows)
        if not bins:
            continue
        entry = _commit_group(store, dataset, commit_id(COMPACT_WRITER, seq), seq, bins, compression_level, target_rows, clock, res, on_file)
        if entry is None:
            continue
        seq += 1
        res.commits += 1
        res.retired += len(entry.retires)
        res.rows += entry.rows
        res.files_after += len(entry.files) - len(entry.retires)
    if retention <= timedelta(0):
        res.vacuumed += vacuum(store, dataset, retention=retention, now=clock.now())
    _log("compaction_done", dataset=dataset, files_before=res.files_before, files_after=res.files_after, rows=res.rows, commits=res.commits, vacuumed=res.vacuumed)
    return res


def _without(e: ManifestEntry, retired: set[str]) -> ManifestEntry:
    return replace(e, files=tuple(f for f in e.files if f.path not in retired))


def _commit_group(
    store: Store,
    dataset: str,
    cid: str,
    seq: int,
    bins: list[list[_Candidate]],
    compression_level: int,
    row_group_rows: int,
    clock: Clock,
    res: CompactionResult,
    on_file: Callable[[int], None] | None,
) -> ManifestEntry | None:
    first = bins[0][0].entry
    files: list[FileEntry] = []
    retires: list[RetiredFile] = []
    for i, b in enumerate(bins):
        tables = []
        for c in b:
            data = store.read(f"{dataset}/{c.file.path}")
            if hashlib.sha256(data).hexdigest() != c.file.sha256:
                res.skipped_corrupt.append(c.file.path)
                _log("compaction_skipped_corrupt", level=logging.WARNING, dataset=dataset, commit_id=c.entry.commit_id)
                for f in files:  # never merge a file that fails its checksum (`verify` reports it)
                    store.remove(f"{dataset}/{f.staged}")
                return None
            tables.append(pq.read_table(io.BytesIO(data)).replace_schema_metadata(None))
            if on_file is not None:
                on_file(1)
        table = pa.concat_tables(tables)
        ranges = _key_ranges(table, list(b[0].file.key_ranges))
        data = encode_parquet(
            table,
            row_group_rows=row_group_rows,
            compression_level=compression_level,
            metadata={
                "driftline.dataset": dataset,
                "driftline.commit_id": cid,
                "driftline.schema_fingerprint": first.schema_fingerprint,
                "driftline.key_ranges": json.dumps(ranges, sort_keys=True),
                "driftline.pipeline_version": first.pipeline_version,
                "driftline.config_hash": first.config_hash,
            },
        )
        staged = f"{STAGING_DIR}/{cid}-{i}.parquet.tmp"
        head = b[0].file
        folder = head.path.rsplit("/", 1)[0] + "/" if "/" in head.path else ""
        if _is_kafka(head):
            name = f"{ranges[KAFKA_KEY[0]][0]}+{ranges[KAFKA_KEY[1]][0]}+{int(ranges[KAFKA_KEY[2]][0]):020d}+{cid}.parquet"
        else:
            name = f"{head.path.rsplit('/', 1)[-1].split('+', 1)[0]}+{cid}-{i}.parquet"
        if faults.armed("mid_write"):
            store.write_durable(f"{dataset}/{staged}", data[: len(data) // 2])
            faults.reached("mid_write", dataset)
        store.write_durable(f"{dataset}/{staged}", data)
        files.append(FileEntry(folder + name, staged, table.num_rows, len(data), hashlib.sha256(data).hexdigest(), ranges, dict(head.partition)))
        retires.extend(RetiredFile(c.file.path, c.entry.commit_id, c.file.rows, c.file.sha256) for c in b)
    if sum(f.rows for f in files) != sum(r.rows for r in retires):  # pragma: no cover - a bug, never data
        raise ManifestError(f"dataset {dataset!r}: compaction {cid} would change the row count; nothing committed")
    entry = ManifestEntry(
        dataset=dataset,
        commit_id=cid,
        writer=COMPACT_WRITER,
        seq=seq,
        created_at=clock.now().isoformat(),
        files=tuple(files),
        coverage={},
        schema_fingerprint=first.schema_fingerprint,
        pipeline_version=first.pipeline_version,
        config_hash=first.config_hash,
        model_versions=dict(first.model_versions),
        format=COMPACT_FORMAT_VERSION,
        retires=tuple(retires),
    )
    faults.reached("before_manifest", dataset)
    append_entry(store, entry)
    faults.reached("after_manifest", dataset)
    for f in files:
        store.publish(f"{dataset}/{f.staged}", f"{dataset}/{f.path}")
    faults.reached("after_publish", dataset)
    return entry


def _log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, event, extra={"fields": fields})
