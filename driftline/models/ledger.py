"""The replay-safe call ledger: results, spend, budget reservations and cached answers.

After a crash Bytewax replays input from the last recovery snapshot.  Every result that
involved a remote tier is written here, keyed by ``(src_topic, src_partition,
src_offset, config_hash)``; a replayed event finds its row and takes the recorded
result, marked replayed, at zero cost.  A provider's answer is written the moment it
arrives, by the thread that received it, together with the spend it caused (per day and
budget scope) and its response-cache entry, so a restart resumes the day's totals and
the cache, and a crash re-sends at most the requests still in flight.  Answers that
arrive together share one small transaction (group commit).  A commit survives the
process being killed as soon as it returns (SQLite has written it to the WAL file);
with ``ledger.fsync: batch`` (default) the WAL is fsynced once per batch, before the
batch's results leave the step, so a power loss re-bills at most the batch in flight;
with ``answer`` every commit is fsynced (``synchronous=FULL``), which makes each answer
wait for the disk.

The ledger is one SQLite file in WAL mode, shared by every worker and process of a
host (they may all open it); processes of several hosts share it on a network file
system in rollback-journal mode (``ledger.journal_mode: delete``).  Budget reservations of requests in flight are published
per process (``reserved``, with a lease), so processes admit requests against the
same totals.  Rows older than ``retention_s`` are pruned: the ledger only has to reach
back past the last snapshot.

>>> import tempfile, os
>>> led = CallLedger(os.path.join(tempfile.mkdtemp(), "l.sqlite"), retention_s=3600)
>>> led.record([(("t", 0, 5), {"model_label": "positive"})], {("2026-01-01", "tenant", "acme"): 0.5}, now=1000.0, config_hash="h")
>>> led.lookup([("t", 0, 5), ("t", 0, 6)], "h")
{0: {'model_label': 'positive'}}
>>> led.spend("2026-01-01")
{('tenant', 'acme'): 0.5}
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from driftline.broker import _pid_alive

Coord = tuple[str, int, int]
ScopeKey = tuple[str, str]  # (scope, key): ("tenant", "acme")
DayScopeKey = tuple[str, str, str]  # (day, scope, key)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    topic TEXT NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL, cfg TEXT NOT NULL,
    written_at REAL NOT NULL, result BLOB NOT NULL,
    PRIMARY KEY (topic, part, off, cfg)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS calls_written ON calls (written_at);
CREATE TABLE IF NOT EXISTS spend (
    day TEXT NOT NULL, scope TEXT NOT NULL, key TEXT NOT NULL, usd REAL NOT NULL,
    PRIMARY KEY (day, scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reserved (
    day TEXT NOT NULL, scope TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,
    usd REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (day, scope, key, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, stored_at REAL NOT NULL, answer BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cache_stored ON cache (stored_at);
CREATE TABLE IF NOT EXISTS pacing (
    bucket TEXT PRIMARY KEY, at REAL NOT NULL
) WITHOUT ROWID;
"""

_CHUNK = 500  # bound on SQL parameters per statement


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _connect(path: Path, journal_mode: str, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


@dataclass(slots=True)
class _Write:
    """What one writer asked to record, waiting for its group's transaction."""

    rows: list[tuple[Any, ...]]
    deltas: list[tuple[str, str, str, float]]
    cached: list[tuple[str, float, bytes]]
    now: float
    done: bool = False
    error: BaseException | None = None


class CallLedger:
    """SQLite ledger (WAL); safe to share between the workers and processes of one host.

    ``owner`` names this process in the ``reserved`` table (host, pid and a random part);
    reservations left by a process of this host that no longer runs are dropped when a
    ledger is opened, those of other hosts expire with their lease.
    """

    def __init__(
        self,
        path: str | Path,
        retention_s: float,
        prune_every: int = 200,
        *,
        fsync: Literal["batch", "answer"] = "batch",
        journal_mode: Literal["wal", "delete"] = "wal",
        cache_ttl_s: float = 3600.0,
        cache_max_entries: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self.prune_every = prune_every
        self.cache_ttl_s = cache_ttl_s
        self.cache_max_entries = cache_max_entries
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._commits = 0
        self._lock = threading.Lock()
        self._group = threading.Condition(threading.Lock())  # group commit of concurrent writers
        self._queue: list[_Write] = []
        self._committing = False
        # "answer": SQLite fsyncs every commit; "batch": commits reach the WAL file (safe
        # from a process crash) and sync() fsyncs it once per batch
        # (without WAL, SQLite syncs its rollback journal at every commit: nothing to add)
        journal = journal_mode.upper()
        self._db = _connect(self.path, journal, "FULL" if fsync == "answer" else "NORMAL")
        self._fsync_batches = fsync == "batch" and journal == "WAL"
        self._unsynced = False
        self._sync_lock = threading.Lock()
        self._db.executescript(_SCHEMA)
        # reservations are not worth an fsync: a crash takes them with it
        self._res_lock = threading.Lock()
        self._res_db = _connect(self.path, journal, "OFF")
        self._drop_dead_owners()

    # -- results -----------------------------------------------------------
    def lookup(self, coords: Sequence[Coord | None], config_hash: str) -> dict[int, dict[str, Any]]:
        """Recorded results for the given coordinates: ``{position: result}``."""
        by_part: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        for i, c in enumerate(coords):
            if c is not None:
                by_part[(c[0], c[1])].append((c[2], i))
        found: dict[int, dict[str, Any]] = {}
        with self._lock:
            for (topic, part), items in by_part.items():
                pos = dict(items)
                for chunk in _chunks([o for o, _ in items]):
                    q = f"SELECT off, result FROM calls WHERE topic=? AND part=? AND cfg=? AND off IN ({','.join('?' * len(chunk))})"
                    for off, blob in self._db.execute(q, (topic, part, config_hash, *chunk)):
                        found[pos[off]] = orjson.loads(blob)
        return found

    def record(
        self,
        entries: Iterable[tuple[Coord, Mapping[str, Any]]],
        spend: Mapping[DayScopeKey, float],
        *,
        now: float,
        config_hash: str,
        cache: Iterable[tuple[str, bytes]] = (),
    ) -> None:
        """Durably write results by coordinates, spend deltas ``{(day, scope, key): usd}``
        and cache entries ``(key, answer)``: one transaction, shared with the writes other
        threads make at the same moment (group commit), done when this returns."""
        write = _Write(
            [(c[0], c[1], c[2], config_hash, now, orjson.dumps(dict(r))) for c, r in entries],
            [(d, s, k, usd) for (d, s, k), usd in spend.items() if usd],
            [(k, now, blob) for k, blob in cache],
            now,
        )
        if not write.rows and not write.deltas and not write.cached:
            return
        with self._group:
            self._queue.append(write)
            while not write.done:
                if self._committing:
                    self._group.wait()
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                self._group.release()
                error: BaseException | None = None
                try:
                    self._commit(batch)
                except BaseException as exc:  # every writer of the group learns it failed
                    error = exc
                finally:
                    self._group.acquire()
                    self._committing = False
                    for w in batch:
                        w.done, w.error = True, error
                    self._group.notify_all()
        if write.error is not None:
            raise write.error

    def _commit(self, batch: list[_Write]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for w in batch:
                    if w.rows:
                        self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?)", w.rows)
                    if w.deltas:
                        self._db.executemany("INSERT INTO spend VALUES (?, ?, ?, ?) ON CONFLICT (day, scope, key) DO UPDATE SET usd = usd + excluded.usd", w.deltas)
                    if w.cached:
                        self._db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?)", w.cached)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._commits += 1
            self._unsynced = self._fsync_batches
            if self._commits % self.prune_every == 0:
                self._prune(max(w.now for w in batch))

    def sync(self) -> None:
        """Make every commit so far survive a power loss too (fsync of the WAL file); a
        no-op when each commit is fsynced already or nothing was written since."""
        with self._sync_lock:  # a sync in progress covers the commits made before it started
            if not self._unsynced:
                return
            self._unsynced = False
            try:
                fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            except FileNotFoundError:  # checkpointed and removed: the database file holds it, synced
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- budgets -------------------------------------------------------------
    def reserve(
        self,
        day: str,
        keys: Iterable[ScopeKey],
        decide: Callable[[dict[ScopeKey, float], dict[ScopeKey, float]], Mapping[DayScopeKey, float]],
        *,
        now: float,
        live_after: float,
    ) -> None:
        """Admit requests against totals every process agrees on, in one write transaction.

        ``decide(settled, others_reserved)`` gets the day's settled spend and the live
        reservations of other processes for ``keys`` and returns this process's new
        reservation totals, which are published before any other process can read.
        """
        by_scope: dict[str, list[str]] = defaultdict(list)
        for scope, key in keys:
            by_scope[scope].append(key)
        with self._res_lock:
            db = self._res_db
            db.execute("BEGIN IMMEDIATE")
            try:
                settled: dict[ScopeKey, float] = {}
                others: dict[ScopeKey, float] = {}
                for scope, names in by_scope.items():
                    for chunk in _chunks(names):
                        marks = ",".join("?" * len(chunk))
                        for key, usd in db.execute(f"SELECT key, usd FROM spend WHERE day=? AND scope=? AND key IN ({marks})", (day, scope, *chunk)):
                            settled[(scope, key)] = usd
                        q = f"SELECT key, SUM(usd) FROM reserved WHERE day=? AND scope=? AND owner<>? AND updated_at>=? AND key IN ({marks}) GROUP BY key"
                        for key, usd in db.execute(q, (day, scope, self.owner, live_after, *chunk)):
                            others[(scope, key)] = usd
                self._publish(db, decide(settled, others), now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def publish_reserved(self, totals: Mapping[DayScopeKey, float], *, now: float) -> None:
        """Publish this process's reservation totals ``{(day, scope, key): usd}`` (0 removes one)."""
        with self._res_lock:
            self._res_db.execute("BEGIN IMMEDIATE")
            try:
                self._publish(self._res_db, totals, now)
                self._res_db.execute("COMMIT")
            except BaseException:
                self._res_db.execute("ROLLBACK")
                raise

    def _publish(self, db: sqlite3.Connection, totals: Mapping[DayScopeKey, float], now: float) -> None:
        live = [(d, s, k, self.owner, usd, now) for (d, s, k), usd in totals.items() if usd > 1e-12]
        gone = [(d, s, k, self.owner) for (d, s, k), usd in totals.items() if usd <= 1e-12]
        if live:
            db.executemany("INSERT OR REPLACE INTO reserved VALUES (?, ?, ?, ?, ?, ?)", live)
        if gone:
            db.executemany("DELETE FROM reserved WHERE day=? AND scope=? AND key=? AND owner=?", gone)

    def _drop_dead_owners(self) -> None:
        host = socket.gethostname()
        with self._lock:
            owners = [o for (o,) in self._db.execute("SELECT DISTINCT owner FROM reserved")]
            dead = []
            for o in owners:
                o_host, _, rest = o.partition("/")
                pid = rest.partition("/")[0]
                # an owner of this host whose process is gone, or an earlier process that had our pid
                if o_host == host and pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
                    dead.append((o,))
            if dead:
                self._db.executemany("DELETE FROM reserved WHERE owner=?", dead)

    def spend(self, day: str) -> dict[tuple[str, str], float]:
        """The day's settled spend per ``(scope, key)``."""
        with self._lock:
            return {(s, k): usd for s, k, usd in self._db.execute("SELECT scope, key, usd FROM spend WHERE day=?", (day,))}

    def reservations(self, day: str) -> dict[tuple[str, str], float]:
        """The day's published reservations per ``(scope, key)``, all processes."""
        with self._lock:
            return {(s, k): usd for s, k, usd in self._db.execute("SELECT scope, key, SUM(usd) FROM reserved WHERE day=? GROUP BY scope, key", (day,))}

    # -- rate limits -------------------------------------------------------------
    def pace(self, buckets: Sequence[str], update: Callable[[dict[str, float]], Mapping[str, float]]) -> None:
        """Rate-limit state shared by every process: ``update`` gets the stored times of
        ``buckets`` (missing ones absent) and returns those to store, in one write
        transaction (see :mod:`driftline.models.ratelimit`)."""
        with self._res_lock:
            db = self._res_db
            db.execute("BEGIN IMMEDIATE")
            try:
                marks = ",".join("?" * len(buckets))
                state = dict(db.execute(f"SELECT bucket, at FROM pacing WHERE bucket IN ({marks})", tuple(buckets))) if buckets else {}
                changed = update(state)
                if changed:
                    db.executemany("INSERT OR REPLACE INTO pacing VALUES (?, ?)", list(changed.items()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def paced(self, buckets: Sequence[str]) -> dict[str, float]:
        """The stored times of ``buckets`` (read only)."""
        with self._res_lock:
            marks = ",".join("?" * len(buckets))
            return dict(self._res_db.execute(f"SELECT bucket, at FROM pacing WHERE bucket IN ({marks})", tuple(buckets))) if buckets else {}

    # -- response cache --------------------------------------------------------
    def cached(self, keys: Sequence[str], *, not_before: float) -> dict[str, tuple[float, bytes]]:
        """Cache entries stored at or after ``not_before``: ``{key: (stored_at, answer)}``."""
        found: dict[str, tuple[float, bytes]] = {}
        with self._lock:
            for chunk in _chunks(keys):
                q = f"SELECT key, stored_at, answer FROM cache WHERE stored_at>=? AND key IN ({','.join('?' * len(chunk))})"
                for key, at, blob in self._db.execute(q, (not_before, *chunk)):
                    found[key] = (at, blob)
        return found

    # -- housekeeping --------------------------------------------------------------
    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM calls WHERE written_at < ?", (now - self.retention_s,))
        self._db.execute("DELETE FROM cache WHERE stored_at < ?", (now - self.cache_ttl_s,))
        excess = int(self._db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]) - self.cache_max_entries
        if excess > 0:
            self._db.execute("DELETE FROM cache WHERE key IN (SELECT key FROM cache ORDER BY stored_at LIMIT ?)", (excess,))
        self._db.execute("DELETE FROM reserved WHERE updated_at < ?", (now - 86400.0,))

    def prune(self, now: float) -> None:
        with self._lock:
            self._prune(now)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock, self._res_lock:
            self._db.close()
            self._res_db.close()


def recorded_events(path: str | Path) -> set[str]:
    """``topic:partition:offset`` of every result in the ledger at ``path``, read-only: what
    a process starting now would replay (for tools and tests; empty if there is none yet)."""
    p = Path(path)
    if not p.exists():
        return set()
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5)
    try:
        return {f"{t}:{part}:{o}" for t, part, o in db.execute("SELECT topic, part, off FROM calls")}
    except sqlite3.OperationalError:  # tables not created yet
        return set()
    finally:
        db.close()
