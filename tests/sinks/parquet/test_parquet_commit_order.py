"""The ordering hook: an alert row commits only once its window's metrics row is committed
(by the metrics writer of this thread, committing its buffer first if needed, or found in
the metrics dataset's files), and a held alert stays in the snapshot."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa

from driftline.clock import FakeClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import CommitAfter, DatasetSpec, ParquetDatasetSink, RunInfo, load_entries, open_store

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
TS = pa.timestamp("ms", "UTC")
METRICS = DatasetSpec("metrics", pa.schema([("window_start", TS, False), ("key", pa.string(), False), ("events", pa.int64())]), ("window_start", "key"), "window_start")
ALERTS = DatasetSpec(
    "alerts", pa.schema([("rule", pa.string(), False), ("key", pa.string(), False), ("window_start", TS, False), ("state", pa.string(), False)]), ("rule", "key", "window_start", "state"), "window_start"
)
AFTER = CommitAfter("metrics", ("window_start", "key"))


def metrics_row(minute: int, key: str = "a") -> pl.DataFrame:
    return pl.DataFrame({"window_start": [T0 + timedelta(minutes=minute)], "key": [key], "events": [3]}, schema_overrides={"window_start": pl.Datetime("ms", "UTC")})


def alert_row(minute: int, key: str = "a") -> pl.DataFrame:
    return pl.DataFrame(
        {"rule": ["slow"], "key": [key], "window_start": [T0 + timedelta(minutes=minute)], "state": ["firing"]}, schema_overrides={"window_start": pl.Datetime("ms", "UTC")}
    )


def committed(root: Path, name: str) -> int:
    return sum(f.rows for e in load_entries(open_store(str(root)), name) for f in e.files)


def sinks(root: Path, clock: FakeClock, **flush) -> tuple[ParquetDatasetSink, ParquetDatasetSink]:
    settings = SinksConfig(root=str(root), flush_rows=1000, flush_seconds=60, **flush)
    run = RunInfo("0.1.0", "cfg")
    alerts_settings = settings.model_copy(update={"flush_rows": 1})  # alerts are due at once
    return ParquetDatasetSink(METRICS, settings, run_info=run, clock=clock), ParquetDatasetSink(ALERTS, alerts_settings, run_info=run, clock=clock, commit_after=AFTER)


def test_an_alert_waits_for_its_metrics_row_and_then_commits_after_it(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    m_sink, a_sink = sinks(tmp_path, clock)
    metrics, alerts = m_sink.build_part("metrics_parquet", "0", None), a_sink.build_part("alerts_parquet", "0", None)
    alerts.write_batch([alert_row(1)])  # its metrics row has not arrived yet: held
    assert committed(tmp_path, "alerts") == 0 and alerts.writer.buffered_rows == 1
    held = alerts.snapshot()
    assert held.buffers  # the held alert is in the snapshot
    metrics.write_batch([metrics_row(1), metrics_row(2)])  # buffered (flush_seconds 60)
    assert committed(tmp_path, "metrics") == 0
    alerts.write_batch([])  # the next tick: the metrics writer commits its rows first, then the alert
    alerts.snapshot()  # the epoch's end: the background commits are done
    assert committed(tmp_path, "metrics") == 2 and committed(tmp_path, "alerts") == 1
    m_entry = load_entries(open_store(str(tmp_path)), "metrics")[0]
    a_entry = load_entries(open_store(str(tmp_path)), "alerts")[0]
    assert m_entry.created_at <= a_entry.created_at
    metrics.close()
    alerts.close()


def test_a_held_alert_survives_a_restart_and_finds_its_row_in_the_files(tmp_path: Path) -> None:
    """After a restart the metrics writer of the alert's row may not be built in this
    process (nothing to write yet): the gate reads the committed keys from the files."""
    clock = FakeClock(T0)
    m_sink, a_sink = sinks(tmp_path, clock)
    alerts = a_sink.build_part("alerts_parquet", "0", None)
    alerts.write_batch([alert_row(5), alert_row(6, "b")])
    state = alerts.snapshot()
    assert committed(tmp_path, "alerts") == 0
    # the metrics row of minute 5 is committed by a writer in another thread
    def other() -> None:
        part = m_sink.build_part("metrics_parquet", "0", None)
        part.write_batch([metrics_row(5)])
        part.writer.flush_all()
        part.snapshot()  # its background commit is done by the epoch's end

    t = threading.Thread(target=other)
    t.start()
    t.join()
    resumed = a_sink.build_part("alerts_parquet", "0", state)
    resumed.write_batch([])
    resumed.snapshot()
    done = pl.read_parquet(str(tmp_path / "alerts" / "**" / "*.parquet"))
    assert done["key"].to_list() == ["a"] and resumed.writer.buffered_rows == 1  # b waits for its row
    resumed.close()  # end of run: b stays uncommitted, never ahead of its metrics row
    assert committed(tmp_path, "alerts") == 1


def test_datasets_without_an_order_commit_as_before(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    settings = SinksConfig(root=str(tmp_path), flush_rows=1)
    part = ParquetDatasetSink(ALERTS, settings, run_info=RunInfo("0.1.0", "cfg"), clock=clock).build_part("alerts_parquet", "0", None)
    part.write_batch([alert_row(1)])
    part.snapshot()
    assert committed(tmp_path, "alerts") == 1
