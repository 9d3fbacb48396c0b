"""TEST-ONLY fault injection for the crash tests.

``DRIFTLINE_FAULT`` holds comma-separated ``point[@dataset]:n`` items; the process
exits with status 137 (as after SIGKILL) the ``n``-th time it reaches ``point``
(counting from 1, per point and dataset filter).  Points of the Parquet sink, in commit
order:

- ``mid_write``: half of a staged Parquet file is on disk;
- ``before_manifest``: every staged file is durable, no manifest entry yet;
- ``after_manifest``: the manifest entry is durable, files not yet published;
- ``after_publish``: the commit is complete, Bytewax has not snapshotted since.

Points of the transactional Kafka sink (``dataset`` is the sink's name, e.g.
``enrich.events.events.enriched``):

- ``kafka_before_commit``: records, coverage marker and offsets sent, the transaction
  not committed (the restart's ``init_transactions`` aborts it);
- ``kafka_after_commit``: the transaction is committed, the snapshot that knows of it is
  not taken (the restart replays what it covers).

Never set it in production; unset, :func:`reached` costs one dict lookup.
"""

from __future__ import annotations

import os
import sys
import threading

POINTS = ("mid_write", "before_manifest", "after_manifest", "after_publish", "kafka_before_commit", "kafka_after_commit")
_counts: dict[tuple[str, str | None], int] = {}
_lock = threading.Lock()  # the Parquet sink reaches its points on its commit thread


def _plan() -> list[tuple[str, str | None, int]]:
    raw = os.environ.get("DRIFTLINE_FAULT", "").strip()
    out = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        where, _, n = item.rpartition(":")
        point, _, dataset = where.partition("@")
        if point not in POINTS or not n.isdigit():
            raise ValueError(f"DRIFTLINE_FAULT item {item!r}: expected point[@dataset]:n with point in {POINTS}")
        out.append((point, dataset or None, int(n)))
    return out


_PLAN = _plan()


def armed(point: str) -> bool:
    """True if the plan names ``point`` at all (lets callers prepare a partial write)."""
    return any(p == point for p, _ds, _n in _PLAN)


def reached(point: str, dataset: str) -> None:
    """Exit abruptly if the plan says so (test-only)."""
    if not _PLAN:
        return
    for p, ds, n in _PLAN:
        if p != point or (ds is not None and ds != dataset):
            continue
        key = (p, ds)
        with _lock:
            _counts[key] = _counts.get(key, 0) + 1
            hit = _counts[key] == n
        if hit:
            sys.stderr.write(f'{{"event": "fault_injected", "point": "{point}", "dataset": "{dataset}", "n": {n}}}\n')
            sys.stderr.flush()
            os._exit(137)
