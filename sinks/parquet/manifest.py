"""The per-dataset manifest: an append-only log of commits, one small JSON file each.

Layout of a dataset folder::

    <dataset>/_manifest/<writer>-<seq:012d>.json   one entry per commit (never rewritten)
    <dataset>/_staging/<writer>-<seq:012d>-<i>.parquet.tmp   files of a commit in progress
    <dataset>/date=YYYY-MM-DD/hour=HH/<name>.parquet        committed, immutable files

Writing an entry is the *commit point*: entries are created exclusively (never
overwritten) and only after every staged file is durable, and files are published
under their final names only after the entry exists.  So every visible file is listed,
and an entry whose file is not yet visible still has its staged copy, which
:func:`roll_forward` publishes (the approach of Delta Lake's log directory, which works
on object stores without rename or append).

Compaction (:mod:`driftline.sinks.parquet.compact`) writes entries of its own writer,
``compact``, whose ``retires`` list names the files its new files replace.  A retired
file stays on disk until ``vacuum`` removes it after a retention period; from the
moment the compaction's new files are published, readers take the new files and skip
the retired ones (:func:`load_entries` applies this).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from driftline.sinks.parquet.store import Store

FORMAT_VERSION = 1
COMPACT_FORMAT_VERSION = 2  # entries with ``retires``; older readers refuse them (loudly) instead of double counting
COMPACT_WRITER = "compact"
MANIFEST_DIR = "_manifest"
STAGING_DIR = "_staging"


class ManifestError(RuntimeError):
    """The manifest cannot be read or contradicts the files."""


@dataclass(frozen=True)
class FileEntry:
    """One committed file; paths are relative to the dataset folder."""

    path: str
    staged: str
    rows: int
    bytes: int
    sha256: str
    key_ranges: dict[str, list[Any]]
    partition: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetiredFile:
    """A file a compaction replaced: its path (relative to the dataset) and what it held."""

    path: str
    commit_id: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class ManifestEntry:
    """One commit: its files, the keys it covers and its lineage."""

    dataset: str
    commit_id: str
    writer: str
    seq: int
    created_at: str
    files: tuple[FileEntry, ...]
    coverage: dict[str, list[int]]
    schema_fingerprint: str
    pipeline_version: str
    config_hash: str
    model_versions: dict[str, str]
    format: int = FORMAT_VERSION
    retires: tuple[RetiredFile, ...] = ()

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def to_json(self) -> bytes:
        d = asdict(self)
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, origin: str) -> ManifestEntry:
        try:
            d = json.loads(data)
            files = tuple(FileEntry(**f) for f in d.pop("files"))
            retires = tuple(RetiredFile(**r) for r in d.pop("retires", ()))
            return cls(files=files, retires=retires, **d)
        except (ValueError, TypeError, KeyError) as exc:
            raise ManifestError(f"manifest entry {origin} is unreadable: {exc}") from None


def commit_id(writer: str, seq: int) -> str:
    return f"{writer}-{seq:012d}"


_TEMP_RE = re.compile(r"^\.?(?P<cid>.*-\d{12})(?:-\d+\.parquet\.tmp|\.json)(?:\.[0-9a-f]+\.inflight)?$")


def temp_owner(name: str) -> str | None:
    """The writer whose commit a staged file or in-flight temp belongs to (``None``: not a commit's).

    >>> temp_owner("enrich.events-p1-000000000007-0.parquet.tmp"), temp_owner(".p0-000000000002.json.1a2b3c4d5e6f.inflight")
    ('enrich.events-p1', 'p0')
    """
    m = _TEMP_RE.match(name)
    return m.group("cid")[:-13] if m else None


def entry_path(dataset: str, cid: str) -> str:
    return f"{dataset}/{MANIFEST_DIR}/{cid}.json"


def load_entries(store: Store, dataset: str, *, live: bool = True) -> list[ManifestEntry]:
    """Every committed entry of ``dataset`` in commit order (writer, then sequence).

    With ``live`` (the default, what writers and readers need) each entry lists only its
    *live* files: files retired by an effective compaction are left out, and so are the
    files of a compaction whose publication is unfinished (see :func:`split_view`).
    ``live=False`` returns the entries as written (``verify``, ``compact``).
    """
    out = []
    for rel in store.list_files(f"{dataset}/{MANIFEST_DIR}"):
        name = rel.rsplit("/", 1)[-1]
        if not name.endswith(".json") or name.startswith("."):
            continue  # in-flight temp of an entry that was never committed
        out.append(ManifestEntry.from_json(store.read(rel), rel))
    out.sort(key=lambda e: (e.writer, e.seq))
    if not live:
        return out
    view = split_view(store, dataset, out)
    return [replace(e, files=tuple(f for f in e.files if (e.commit_id, f.path) in view.live)) for e in out]


def live_files(store: Store, dataset: str) -> list[str]:
    """Paths (relative to the root) of the files a reader of ``dataset`` should read now.

    This is the committed set: never a staged file, never a file a compaction replaced.
    Readers that glob ``**/*.parquet`` instead also see retired files until they are
    vacuumed.
    """
    return [f"{dataset}/{f.path}" for e in load_entries(store, dataset) for f in e.files]


@dataclass
class DatasetView:
    """Which committed files readers should read.

    ``live`` holds ``(commit_id, path)`` of every file to read; ``retired`` maps each file
    an effective compaction replaced to that compaction's entry; ``pending`` lists the
    compactions whose new files are still staged (not effective yet: readers keep reading
    the files they replace until a restart, ``compact`` or ``verify --repair`` publishes them).
    """

    live: set[tuple[str, str]] = field(default_factory=set)
    retired: dict[str, ManifestEntry] = field(default_factory=dict)
    pending: list[ManifestEntry] = field(default_factory=list)


def split_view(store: Store, dataset: str, entries: list[ManifestEntry]) -> DatasetView:
    """Classify the files of ``entries`` (as written) into live, retired and pending.

    A compaction is *effective* unless one of its files exists only as its staged copy,
    i.e. unless its publication was interrupted.  This needs no ordering between
    compactions: a compaction whose output was itself compacted and vacuumed has no
    staged copy left, so it stays effective and its own retirements stay applied.
    """
    view = DatasetView()
    for e in entries:
        if not e.retires:
            continue
        if any(not store.exists(f"{dataset}/{f.path}") and store.exists(f"{dataset}/{f.staged}") for f in e.files):
            view.pending.append(e)
            continue
        for r in e.retires:
            view.retired[r.path] = e
    pending = {e.commit_id for e in view.pending}
    for e in entries:
        if e.commit_id in pending:
            continue
        view.live.update((e.commit_id, f.path) for f in e.files if f.path not in view.retired)
    return view


def append_entry(store: Store, entry: ManifestEntry) -> None:
    """Record ``entry`` durably; refuses to replace an existing entry."""
    try:
        store.create_exclusive(entry_path(entry.dataset, entry.commit_id), entry.to_json())
    except FileExistsError:
        raise ManifestError(
            f"manifest entry {entry.commit_id} of dataset {entry.dataset!r} already exists: is another pipeline writing this dataset with the same sink partition?"
        ) from None


@dataclass
class RecoveryReport:
    """What :func:`roll_forward` did."""

    published: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed_staging: list[str] = field(default_factory=list)


def roll_forward(store: Store, dataset: str, entries: list[ManifestEntry], writer: str | None) -> RecoveryReport:
    """Finish interrupted commits of ``writer`` (all writers if None) and drop uncommitted temps.

    A listed file that is not visible is published from its staged copy.  Staged and
    in-flight files no entry refers to belong to commits that never happened and are
    removed; they were never visible to readers.  Committed files are never removed.
    """
    report = RecoveryReport()
    referenced: set[str] = set()
    for e in entries:
        if writer is not None and e.writer != writer:
            continue
        for f in e.files:
            final, staged = f"{dataset}/{f.path}", f"{dataset}/{f.staged}"
            referenced.add(staged)
            if store.exists(final):
                if store.exists(staged):
                    store.remove(staged)  # crash between publish's link and unlink
                continue
            if store.exists(staged):
                store.publish(staged, final)
                report.published.append(f.path)
            else:
                report.missing.append(f.path)
    for folder in (STAGING_DIR, MANIFEST_DIR):
        for rel in store.list_files(f"{dataset}/{folder}"):
            name = rel.rsplit("/", 1)[-1]
            inflight = name.startswith(".") and name.endswith(".inflight")
            staged = folder == STAGING_DIR and name.endswith(".tmp")
            if not (inflight or staged) or rel in referenced:
                continue
            if writer is not None and temp_owner(name) != writer:
                continue  # another writer's (a prefix of a name is not the name: p1 is not p10)
            store.remove(rel)
            report.removed_staging.append(rel)
    return report


def kafka_watermarks(entries: list[ManifestEntry]) -> dict[tuple[str, int], int]:
    """Highest committed offset per (topic, partition) of a Kafka-keyed dataset."""
    wm: dict[tuple[str, int], int] = {}
    for e in entries:
        for tp, (_lo, hi) in e.coverage.items():
            topic, _, part = tp.rpartition("+")
            key = (topic, int(part))
            wm[key] = max(wm.get(key, -1), int(hi))
    return wm
