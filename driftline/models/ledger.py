"""The replay-safe call ledger: results of remote calls keyed by source coordinates.

After a crash Bytewax replays input from the last recovery snapshot.  Every result that
involved a remote call is written here, keyed by ``(src_topic, src_partition,
src_offset, config_hash)`` and committed with ``synchronous=FULL`` (fsync) *before* the
result leaves the step; a replayed event finds its row and takes the recorded result,
marked replayed, at zero cost.  The day's spend per budget scope is committed in the
same transaction so budgets resume after a restart.  Rows older than
``retention_s`` are pruned: the ledger only has to reach back past the last snapshot.

>>> import tempfile, os
>>> led = CallLedger(os.path.join(tempfile.mkdtemp(), "l.sqlite"), retention_s=3600)
>>> led.record([(("t", 0, 5), {"model_label": "positive"})], {}, now=1000.0, config_hash="h")
>>> led.lookup([("t", 0, 5), ("t", 0, 6)], "h")
{0: {'model_label': 'positive'}}
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

Coord = tuple[str, int, int]

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
"""


class CallLedger:
    """SQLite ledger (WAL, fsync on commit); safe to share between the workers of one host."""

    def __init__(self, path: str | Path, retention_s: float, prune_every: int = 200) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self.prune_every = prune_every
        self._commits = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

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
                for start in range(0, len(items), 500):
                    chunk = [o for o, _ in items[start : start + 500]]
                    q = f"SELECT off, result FROM calls WHERE topic=? AND part=? AND cfg=? AND off IN ({','.join('?' * len(chunk))})"
                    for off, blob in self._db.execute(q, (topic, part, config_hash, *chunk)):
                        found[pos[off]] = orjson.loads(blob)
        return found

    def record(self, entries: Iterable[tuple[Coord, Mapping[str, Any]]], spend: Mapping[tuple[str, str, str], float], *, now: float, config_hash: str) -> None:
        """Durably write results and spend deltas ``{(day, scope, key): usd}`` in one transaction."""
        rows = [(c[0], c[1], c[2], config_hash, now, orjson.dumps(dict(r))) for c, r in entries]
        if not rows and not spend:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "INSERT INTO spend VALUES (?, ?, ?, ?) ON CONFLICT (day, scope, key) DO UPDATE SET usd = usd + excluded.usd",
                    [(d, s, k, usd) for (d, s, k), usd in spend.items() if usd],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._commits += 1
            if self._commits % self.prune_every == 0:
                self._prune(now)

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM calls WHERE written_at < ?", (now - self.retention_s,))

    def prune(self, now: float) -> None:
        with self._lock:
            self._prune(now)

    def spend(self, day: str) -> dict[tuple[str, str], float]:
        """The day's recorded spend per ``(scope, key)``."""
        with self._lock:
            return {(s, k): usd for s, k, usd in self._db.execute("SELECT scope, key, usd FROM spend WHERE day=?", (day,))}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
