"""Integrity checks of committed datasets (the logic behind ``driftline verify``).

For every dataset folder under the root it checks each manifest entry's files (present,
size, SHA-256, row count, schema fingerprint and commit id embedded in the file), finds
``.parquet`` files the manifest does not list and entries whose file is missing, and
reports natural keys held by more than one row.  Interrupted commits (a manifest entry
whose file is still staged, or staged temps no entry refers to) are *warnings*: the
pipeline finishes or removes them when it restarts, and ``repair`` does it offline.

Compaction is understood: a file retired by an effective compaction is no longer read
(present until vacuumed, or already removed: both fine); while a compaction's
publication is unfinished its inputs stay the live files; every compaction must hold
exactly the rows of the files it retires, and may retire only files the manifest lists.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from driftline.sinks.parquet.format import read_file_metadata
from driftline.sinks.parquet.manifest import MANIFEST_DIR, STAGING_DIR, ManifestEntry, ManifestError, load_entries, roll_forward, split_view
from driftline.sinks.parquet.spec import schema_fingerprint
from driftline.sinks.parquet.store import Store

MAX_EXAMPLES = 5


@dataclass
class Finding:
    kind: str
    path: str
    detail: str


@dataclass
class DatasetReport:
    name: str
    files: int = 0
    rows: int = 0
    bytes: int = 0
    commits: int = 0
    retired: int = 0
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def discover_datasets(store: Store) -> list[str]:
    """Folders under the root that hold a manifest or Parquet files."""
    out = []
    for name in store.list_dirs(""):
        if name.startswith((".", "_")):
            continue
        if MANIFEST_DIR in store.list_dirs(name):
            out.append(name)
        elif any(p.endswith(".parquet") for p in store.list_files(name)):
            out.append(name)
    return out


def verify_dataset(store: Store, name: str, *, repair: bool = False, on_file: Callable[[int], None] | None = None) -> DatasetReport:
    """Check one dataset; with ``repair``, first finish interrupted commits and drop orphan temps.

    ``on_file(n)`` is called as files are checked (progress bars).
    """
    rep = DatasetReport(name)
    try:
        entries = load_entries(store, name, live=False)
    except ManifestError as exc:
        rep.problems.append(Finding("unreadable_manifest", f"{name}/{MANIFEST_DIR}", str(exc)))
        return rep
    if not entries and MANIFEST_DIR not in store.list_dirs(name):
        for p in store.list_files(name):
            if p.endswith(".parquet"):
                rep.problems.append(Finding("unknown_file", p, "no manifest in this dataset folder lists it"))
        return rep
    if repair:
        ever_retired = {r.path for e in entries for r in e.retires}
        fixed = roll_forward(store, name, [replace(e, files=tuple(f for f in e.files if f.path not in ever_retired)) for e in entries], None)
        for p in fixed.published:
            rep.warnings.append(Finding("repaired_publish", f"{name}/{p}", "published the staged copy of a committed file"))
        for p in fixed.removed_staging:
            rep.warnings.append(Finding("repaired_orphan", p, "removed a temp of a commit that never happened"))
    rep.commits = len(entries)
    view = split_view(store, name, entries)
    listed: set[str] = set()
    referenced_staged: set[str] = set()
    key_frames: list[pl.DataFrame] = []
    key_cols: list[str] | None = None
    _check_retirements(rep, entries)
    for e in entries:
        for f in e.files:
            path = f"{name}/{f.path}"
            listed.add(path)
            referenced_staged.add(f"{name}/{f.staged}")
            if on_file is not None:
                on_file(1)
            if f.path in view.retired:
                rep.retired += 1  # replaced by a compaction: not read any more, present until vacuumed
                continue
            if not store.exists(path):
                if store.exists(f"{name}/{f.staged}"):
                    rep.warnings.append(Finding("pending_publish", path, f"commit {e.commit_id} is recorded, its file is still staged (restart the pipeline or run with --repair)"))
                else:
                    rep.problems.append(Finding("missing_file", path, f"listed by commit {e.commit_id} but absent"))
                continue
            data = store.read(path)
            live = (e.commit_id, f.path) in view.live  # else: published part of an unfinished compaction
            if live:
                rep.files += 1
                rep.bytes += len(data)
                rep.rows += f.rows
            else:
                rep.warnings.append(Finding("pending_publish", path, f"compaction {e.commit_id} is recorded, some of its files are still staged (run `driftline compact` or --repair)"))
            if len(data) != f.bytes:
                rep.problems.append(Finding("size_mismatch", path, f"{len(data)} bytes, manifest says {f.bytes}"))
            digest = hashlib.sha256(data).hexdigest()
            if digest != f.sha256:
                rep.problems.append(Finding("checksum_mismatch", path, f"sha256 {digest[:16]}…, manifest says {f.sha256[:16]}…"))
                continue
            try:
                rows, schema, lineage = read_file_metadata(data)
            except Exception as exc:  # pyarrow raises several types on corrupt files
                rep.problems.append(Finding("unreadable_file", path, str(exc)))
                continue
            if rows != f.rows:
                rep.problems.append(Finding("row_count_mismatch", path, f"{rows} rows, manifest says {f.rows}"))
            if schema_fingerprint(schema) != e.schema_fingerprint:
                rep.problems.append(Finding("schema_mismatch", path, f"schema fingerprint {schema_fingerprint(schema)}, manifest says {e.schema_fingerprint}"))
            if lineage.get("commit_id") != e.commit_id:
                rep.problems.append(Finding("commit_mismatch", path, f"file says commit {lineage.get('commit_id')}, manifest says {e.commit_id}"))
            cols = list(f.key_ranges)
            key_cols = key_cols or cols
            if cols == key_cols and live:
                keys = pl.from_arrow(pq.read_table(io.BytesIO(data), columns=cols))
                assert isinstance(keys, pl.DataFrame)
                key_frames.append(keys.with_columns(pl.lit(f.path).alias("__file")))
    orphans, unknown = [], []
    for p in store.list_files(name):
        rel = p[len(name) + 1 :]
        if rel.startswith(f"{MANIFEST_DIR}/"):
            continue
        if rel.startswith(f"{STAGING_DIR}/"):
            if p not in referenced_staged:
                orphans.append(p)
            continue
        if p.endswith(".parquet") and p not in listed:
            unknown.append(p)
    if orphans or unknown:  # a writer or the compactor may have committed since the manifest was read
        newer = [e for e in load_entries(store, name, live=False) if e.commit_id not in {x.commit_id for x in entries}]
        listed.update(f"{name}/{f.path}" for e in newer for f in e.files)
        referenced_staged.update(f"{name}/{f.staged}" for e in newer for f in e.files)
    for p in orphans:
        if p not in referenced_staged:
            rep.warnings.append(Finding("orphan_temp", p, "temp of an unfinished commit (removed when its writer restarts, or with --repair)"))
    for p in unknown:
        if p not in listed:
            rep.problems.append(Finding("unknown_file", p, "not listed by the manifest (not written by a committed sink step)"))
    if key_frames and key_cols:
        _check_duplicates(rep, pl.concat(key_frames, how="vertical_relaxed"), key_cols)
    return rep


def _check_retirements(rep: DatasetReport, entries: list[ManifestEntry]) -> None:
    """Each compaction retires files the manifest lists (once) and keeps their rows exactly."""
    listed = {f.path: f for e in entries for f in e.files}
    seen: dict[str, str] = {}
    for e in entries:
        if not e.retires:
            continue
        for r in e.retires:
            f = listed.get(r.path)
            if f is None or f.sha256 != r.sha256:
                rep.problems.append(Finding("bad_retirement", f"{rep.name}/{r.path}", f"compaction {e.commit_id} retires a file no entry lists with that checksum"))
            elif r.path in seen:
                rep.problems.append(Finding("bad_retirement", f"{rep.name}/{r.path}", f"retired twice, by {seen[r.path]} and {e.commit_id}"))
            seen[r.path] = e.commit_id
        if sum(f.rows for f in e.files) != sum(r.rows for r in e.retires):
            rep.problems.append(
                Finding("compaction_mismatch", f"{rep.name}/{MANIFEST_DIR}/{e.commit_id}.json", f"{e.rows} rows written, {sum(r.rows for r in e.retires)} retired")
            )


def _check_duplicates(rep: DatasetReport, keys: pl.DataFrame, key_cols: list[str]) -> None:
    dup = keys.group_by(key_cols).agg(pl.len().alias("copies"), pl.col("__file").unique().sort().alias("files")).filter(pl.col("copies") > 1)
    if dup.height == 0:
        return
    extra = int(dup["copies"].sum()) - dup.height
    examples = []
    for row in dup.sort(key_cols).head(MAX_EXAMPLES).iter_rows(named=True):
        key = ", ".join(f"{c}={row[c]}" for c in key_cols)
        examples.append(f"({key}) x{row['copies']} in {', '.join(row['files'])}")
    rep.problems.append(Finding("duplicate_keys", rep.name, f"{dup.height} key(s) held more than once ({extra} extra row(s)); e.g. " + "; ".join(examples)))
