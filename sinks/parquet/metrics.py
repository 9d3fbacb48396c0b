"""Prometheus metrics of the Parquet sink (label: ``dataset`` only, never a key or id)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
