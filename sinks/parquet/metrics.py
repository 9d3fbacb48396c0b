"""Prometheus metrics of the Parquet sink (label: ``dataset`` only, never a key or id)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

ROWS_WRITTEN = Counter("driftline_sink_rows_written_total", "Rows committed to Parquet files.", ["dataset"])
ROWS_REPLAYED = Counter(
    "driftline_sink_rows_replayed_total", "Rows skipped because their natural key was already committed (replays after a restart).", ["dataset"]
)
FILES_COMMITTED = Counter("driftline_sink_files_committed_total", "Parquet files committed.", ["dataset"])
BYTES_WRITTEN = Counter("driftline_sink_bytes_written_total", "Bytes of committed Parquet files.", ["dataset"])
COMMIT_SECONDS = Histogram(
    "driftline_sink_commit_seconds",
    "Time to stage, record and publish one commit.",
    ["dataset"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMIT_LAG_SECONDS = Histogram(
    "driftline_sink_commit_lag_seconds",
    "How long the oldest row of a commit waited in the buffer.",
    ["dataset"],
    buckets=(0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 300.0),
)
BUFFERED_ROWS = Gauge("driftline_sink_buffered_rows", "Rows waiting in sink buffers (not yet committed).", ["dataset"])


class UncommittedAge(Collector):
    """``driftline_sink_oldest_uncommitted_age_seconds{dataset}``: how long the oldest row
    still buffered (not yet in a committed file) has waited, read from the live writers at
    scrape time; 0 when everything is committed.  The commit lag of each dataset."""

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def track(self, writer: Any) -> None:
        """Watch a writer (anything with ``spec.name``, ``clock`` and ``oldest_buffered_us``)."""
        with self._lock:
            self._writers.add(writer)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = GaugeMetricFamily(
            "driftline_sink_oldest_uncommitted_age_seconds", "Age of the oldest row waiting in a sink buffer, not yet committed (0: all committed).", labels=["dataset"]
        )
        with self._lock:
            writers = list(self._writers)
        ages: dict[str, float] = {}
        for w in writers:
            oldest = w.oldest_buffered_us
            age = 0.0 if oldest is None else max(w.clock.now().timestamp() - oldest / 1_000_000, 0.0)
            ages[w.spec.name] = max(ages.get(w.spec.name, 0.0), age)
        for name, age in sorted(ages.items()):
            fam.add_metric([name], age)
        yield fam

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


UNCOMMITTED_AGE = UncommittedAge()
REGISTRY.register(UNCOMMITTED_AGE)
