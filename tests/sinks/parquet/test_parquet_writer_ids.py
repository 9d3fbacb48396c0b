"""Writer ids and key columns when several pipelines share a root (issue 13).

- two writers named after their flow commit the same sink partition of one dataset
  without colliding, and rows that differ only in the ``flow`` key column are both kept;
- a key column added to a dataset later (the window datasets' ``flow``) does not stop a
  writer from learning the keys of files written before it (they read as null);
- a writer's restart removes its own uncommitted temps only, not those of a writer whose
  id it is a prefix of.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa

from driftline.clock import FakeClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import DatasetSpec, DatasetWriter, RunInfo, load_entries, open_store
from driftline.sinks.parquet.manifest import roll_forward
from driftline.sinks.parquet.spec import writer_id

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
OLD = pa.schema([("window_start", pa.timestamp("ms", "UTC"), False), ("key", pa.string(), False), ("n", pa.int64())])
NEW = pa.schema([("flow", pa.string(), False), *OLD])


def spec(schema: pa.Schema, key: tuple[str, ...]) -> DatasetSpec:
    return DatasetSpec("windows_x", schema, key, "window_start")


def writer(root: Path, s: DatasetSpec, wid: str) -> DatasetWriter:
    return DatasetWriter(s, SinksConfig(root=str(root), flush_rows=1_000), store=open_store(str(root)), run_info=RunInfo("0", "h"), clock=FakeClock(T0), writer_id=wid)


def rows(flow: str | None, keys: list[str]) -> pl.DataFrame:
    cols = {"window_start": [T0] * len(keys), "key": keys, "n": list(range(len(keys)))}
    return pl.DataFrame({"flow": [flow] * len(keys), **cols} if flow else cols)


def test_two_flows_share_a_dataset_without_colliding(tmp_path: Path) -> None:
    s = spec(NEW, ("window_start", "key", "flow"))
    for flow in ("enrich", "monitor"):
        w = writer(tmp_path, s, writer_id(f"{flow}.topic", 0))
        w.write(rows(flow, ["source=a|model=m", "source=b|model=m"]))  # the same window keys
        w.close()
    entries = load_entries(open_store(str(tmp_path)), "windows_x")
    assert sorted(e.commit_id for e in entries) == ["enrich.topic-p0-000000000000", "monitor.topic-p0-000000000000"]
    assert sum(e.rows for e in entries) == 4  # nothing taken for a replay of the other flow's rows


def test_a_key_column_added_later_reads_as_null_in_older_files(tmp_path: Path) -> None:
    old = writer(tmp_path, spec(OLD, ("window_start", "key")), "p0")
    old.write(rows(None, ["source=a|model=m"]))
    old.close()
    new = writer(tmp_path, spec(NEW, ("window_start", "key", "flow")), writer_id("enrich.topic", 0))
    new.write(rows("enrich", ["source=a|model=m", "source=c|model=m"]))
    new.write(rows("enrich", ["source=c|model=m"]))  # a replay of a row of this run: skipped at commit
    new.close()
    assert new.rows_written == 2 and new.rows_replayed == 1


def test_a_restart_removes_only_its_own_temps(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    for wid in ("enrich.t-p1", "enrich.t-p10"):
        store.write_durable(f"windows_x/_staging/{wid}-000000000003-0.parquet.tmp", b"x")
    report = roll_forward(store, "windows_x", [], "enrich.t-p1")
    assert [p.rsplit("/", 1)[-1] for p in report.removed_staging] == ["enrich.t-p1-000000000003-0.parquet.tmp"]
    assert store.exists("windows_x/_staging/enrich.t-p10-000000000003-0.parquet.tmp")
