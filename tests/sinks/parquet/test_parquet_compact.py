"""Compaction: fewer files, the same rows, ``verify`` clean at every kill point, and no
clash with a writer that keeps committing (writers and the compactor share a folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from driftline.cli import main
from driftline.clock import FakeClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import DatasetWriter, RunInfo, open_store
from driftline.sinks.parquet.compact import compact_dataset
from driftline.sinks.parquet.manifest import live_files, load_entries
from driftline.sinks.parquet.verify import verify_dataset

from parquet_helpers import T0, events, windows

RUN = RunInfo("0.1.0", "cfg123")
QUERY = "SELECT src_topic, src_partition, src_offset, event_time, text, date, hour FROM events ORDER BY src_partition, src_offset"


def write_small_files(root: Path | str, spec, *, partitions: int = 2, per_partition: int = 60, rows_per_file: int = 3, clock: FakeClock | None = None, writer_id: str = "p0") -> DatasetWriter:
    """Many small commits over two hours and ``partitions`` topic-partitions."""
    clock = clock or FakeClock(T0)
    w = DatasetWriter(spec, SinksConfig(root=str(root), flush_rows=rows_per_file), store=open_store(str(root)), run_info=RUN, clock=clock, writer_id=writer_id)
    for p in range(partitions):
        w.write(events(list(range(per_partition)), partition=p, step_s=60.0))  # one row a minute: crosses 10:59 -> 11:xx
        w.flush_due()
    w.flush_all()
    return w


def query(root: Path | str, sql: str, capsys) -> str:
    capsys.readouterr()
    assert main(["query", "--root", str(root), "--format", "csv", sql]) == 0
    return capsys.readouterr().out


def files_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if "_staging" not in p.parts)


def test_compaction_cuts_files_keeps_rows_and_verify_passes(tmp_path, events_spec, capsys) -> None:
    write_small_files(tmp_path, events_spec)
    store = open_store(str(tmp_path))
    before_files = len(live_files(store, "events"))
    before = query(tmp_path, QUERY, capsys)
    assert verify_dataset(store, "events").ok

    res = compact_dataset(store, "events", target_rows=1024, older_than=timedelta(0), retention=timedelta(hours=1), clock=FakeClock(T0 + timedelta(hours=2)))
    after_files = len(live_files(store, "events"))
    assert (res.files_before, res.files_after) == (before_files, after_files)
    assert before_files == 42 and after_files == 4  # 2 hours x 2 topic-partitions (hour 10 holds one file each)
    assert res.rows == 118 and res.retired == 40 and res.vacuumed == 0  # the two 10:59 rows stay in their own files
    assert query(tmp_path, QUERY, capsys) == before  # same rows, same Hive columns
    rep = verify_dataset(store, "events")
    assert rep.ok, rep.problems
    assert (rep.rows, rep.files, rep.retired) == (120, 4, 40)
    assert len(files_on_disk(tmp_path)) == 44  # retired files wait for their retention

    # a second run after the retention vacuums them; nothing left to merge
    res2 = compact_dataset(store, "events", target_rows=1024, older_than=timedelta(0), retention=timedelta(hours=1), clock=FakeClock(T0 + timedelta(hours=4)))
    assert (res2.vacuumed, res2.commits, res2.files_after) == (40, 0, 4)
    assert len(files_on_disk(tmp_path)) == 4
    assert query(tmp_path, QUERY, capsys) == before
    assert verify_dataset(store, "events").ok
    names = sorted(p.name for p in files_on_disk(tmp_path))
    assert names[:2] == ["t+0+00000000000000000000.parquet", "t+0+00000000000000000001+compact-000000000000.parquet"]


def test_writer_keeps_committing_and_restarts_after_vacuum(tmp_path, events_spec, window_spec) -> None:
    clock = FakeClock(T0)
    write_small_files(tmp_path, events_spec, clock=clock)
    store = open_store(str(tmp_path))
    w = DatasetWriter(events_spec, SinksConfig(root=str(tmp_path), flush_rows=3), store=store, run_info=RUN, clock=clock)
    compact_dataset(store, "events", target_rows=1024, older_than=timedelta(0), retention=timedelta(0), clock=clock)
    # the running writer commits on; its replays are still skipped by offset watermark
    w.write(events(list(range(55, 70)), partition=0, step_s=60.0))
    w.flush_all()
    assert (w.rows_written, w.rows_replayed) == (10, 5)
    # a fresh writer starts although the retired files are gone
    w2 = DatasetWriter(events_spec, SinksConfig(root=str(tmp_path), flush_rows=3), store=store, run_info=RUN, clock=clock)
    w2.write(events(list(range(0, 72)), partition=0, step_s=60.0))
    w2.flush_all()
    assert (w2.rows_written, w2.rows_replayed) == (2, 70)
    rep = verify_dataset(store, "events")
    assert rep.ok and rep.rows == 132

    # exact-key dataset: the writer learns its keys from the compacted file after vacuum
    wm = DatasetWriter(window_spec, SinksConfig(root=str(tmp_path), flush_rows=2), store=store, run_info=RUN, clock=clock)
    starts = [T0 + timedelta(minutes=1 + i) for i in range(10)]  # all in hour 11
    wm.write(windows(starts, [f"k{i}" for i in range(10)]))
    wm.flush_due()
    res = compact_dataset(store, "metrics", target_rows=1024, older_than=timedelta(0), retention=timedelta(0), clock=clock)
    assert (res.files_before, res.files_after, res.vacuumed) == (5, 1, 5)
    wm2 = DatasetWriter(window_spec, SinksConfig(root=str(tmp_path), flush_rows=2), store=store, run_info=RUN, clock=clock)
    wm2.write(windows(starts + [T0 + timedelta(minutes=12)], [f"k{i}" for i in range(11)]))
    wm2.flush_all()
    assert (wm2.rows_written, wm2.rows_replayed) == (1, 10)
    assert verify_dataset(store, "metrics").ok


def test_older_than_and_big_files_are_left_alone(tmp_path, events_spec) -> None:
    clock = FakeClock(T0)
    write_small_files(tmp_path, events_spec, partitions=1, clock=clock)
    store = open_store(str(tmp_path))
    res = compact_dataset(store, "events", target_rows=1024, older_than=timedelta(hours=1), retention=timedelta(0), clock=FakeClock(T0 + timedelta(minutes=30)))
    assert (res.commits, res.skipped_young) == (0, 21)
    # files of at least half the target are not "small"
    res = compact_dataset(store, "events", target_rows=6, older_than=timedelta(0), retention=timedelta(0), clock=clock)
    assert res.commits == 0 and res.files_after == 21


def test_corrupt_input_is_never_merged(tmp_path, events_spec, capsys) -> None:
    write_small_files(tmp_path, events_spec, partitions=1)
    victim = files_on_disk(tmp_path)[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert main(["compact", "--root", str(tmp_path), "--older-than", "0", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    (ds,) = out["datasets"]
    assert ds["skipped_corrupt"] == [str(victim.relative_to(tmp_path / "events"))]
    assert not list((tmp_path / "events" / "_staging").glob("*"))
    assert victim.exists()


def test_object_store_compaction(events_spec) -> None:
    import uuid

    root = f"memory://driftline-compact-{uuid.uuid4().hex[:8]}"
    write_small_files(root, events_spec, partitions=1)
    store = open_store(root)
    res = compact_dataset(store, "events", target_rows=1024, older_than=timedelta(0), retention=timedelta(0), clock=FakeClock(T0))
    assert (res.files_before, res.files_after, res.vacuumed) == (21, 2, 20)
    rep = verify_dataset(store, "events")
    assert rep.ok and rep.rows == 60


COMPACT_SCRIPT = """
import sys
from driftline.cli import main
sys.exit(main(["compact", "--root", sys.argv[1], "--older-than", "0", "--retention", "0", "--target-rows", "25"]))
"""


@pytest.mark.parametrize("point", ["mid_write:2", "before_manifest:1", "after_manifest:2", "after_publish:1"])
def test_kill_points_leave_a_verifiable_state_and_rerun_finishes(tmp_path, events_spec, point, capsys) -> None:
    write_small_files(tmp_path, events_spec)
    before = query(tmp_path, QUERY, capsys)
    env = {**os.environ, "DRIFTLINE_FAULT": point}
    proc = subprocess.run([sys.executable, "-c", COMPACT_SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 137, proc.stderr
    store = open_store(str(tmp_path))
    rep = verify_dataset(store, "events")
    assert rep.ok, rep.problems
    assert rep.rows == 120
    assert query(tmp_path, QUERY, capsys) == before  # readers see the same rows in the crashed state
    # a writer restarting now is not disturbed by the compactor's leftovers
    DatasetWriter(events_spec, SinksConfig(root=str(tmp_path)), store=store, run_info=RUN, clock=FakeClock(T0)).close()
    assert main(["compact", "--root", str(tmp_path), "--older-than", "0", "--retention", "0", "--target-rows", "25"]) == 0
    rep = verify_dataset(store, "events")
    assert rep.ok and not rep.warnings, (rep.problems, rep.warnings)
    assert rep.rows == 120 and rep.files < 20
    assert query(tmp_path, QUERY, capsys) == before
    assert not list((tmp_path / "events" / "_staging").glob("*"))
    live = {f"{tmp_path}/{p}" for p in live_files(store, "events")}
    assert {str(p) for p in files_on_disk(tmp_path)} == live  # vacuumed: only live files remain


def test_verify_flags_a_compaction_that_loses_rows(tmp_path, events_spec, capsys) -> None:
    write_small_files(tmp_path, events_spec, partitions=1)
    store = open_store(str(tmp_path))
    compact_dataset(store, "events", target_rows=1024, older_than=timedelta(0), retention=timedelta(hours=1), clock=FakeClock(T0))
    (entry,) = [p for p in (tmp_path / "events" / "_manifest").glob("compact-*.json")][:1]
    doc = json.loads(entry.read_text())
    doc["retires"][0]["rows"] += 1
    entry.write_text(json.dumps(doc))
    rep = verify_dataset(store, "events")
    assert [f.kind for f in rep.problems] == ["compaction_mismatch"]
    assert load_entries(store, "events", live=False)[0].retires
    assert pl.read_csv(query(tmp_path, "SELECT count(*) AS n FROM events", capsys).encode())["n"].to_list() == [60]
