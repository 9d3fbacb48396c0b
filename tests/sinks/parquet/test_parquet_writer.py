"""DatasetWriter: flushing, layout, manifest, and restarts after simulated crashes.

Crashes are simulated in-process by making a storage step raise (the writer object is
then abandoned, as a killed process would be) and building a new writer from the last
snapshot; the subprocess test at the end exercises the real ``DRIFTLINE_FAULT`` exit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from driftline.clock import FakeClock
from driftline.config.sinks import DatasetSinkConfig, SinksConfig
from driftline.sinks.parquet import DatasetWriter, LocalStore, ManifestError, load_entries, open_store
from driftline.sinks.parquet import writer as writer_mod

from parquet_helpers import T0, events, windows


def make(spec, root: Path | str, run_info, clock: FakeClock | None = None, resume=None, **settings):
    cfg = SinksConfig(root=str(root), **settings)
    store = open_store(cfg.root, fsync=cfg.fsync)
    return DatasetWriter(spec, cfg, store=store, run_info=run_info, clock=clock or FakeClock(T0), resume=resume)


def committed_rows(root: Path | str, dataset: str) -> pl.DataFrame:
    store = open_store(str(root))
    frames = [pl.read_parquet(io.BytesIO(store.read(f"{dataset}/{f.path}"))) for e in load_entries(store, dataset) for f in e.files]
    return pl.concat(frames) if frames else pl.DataFrame()


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


def test_rows_threshold_commits_exact_sized_files_on_offset_boundaries(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info, flush_rows=100)
    w.write(events(list(range(250)), step_s=0.0))
    w.flush_due()
    assert (w.rows_written, w.buffered_rows, w.files_committed) == (200, 50, 2)
    names = [p.name for p in parquet_files(tmp_path)]
    assert names == ["t+0+00000000000000000000.parquet", "t+0+00000000000000000100.parquet"]


def test_time_threshold_commits_the_oldest_rows_after_flush_seconds(tmp_path, events_spec, run_info) -> None:
    clock = FakeClock(T0)
    w = make(events_spec, tmp_path, run_info, clock=clock, flush_seconds=10)
    w.write(events([0, 1]))
    clock.advance(9.9)
    w.write(events([2]))
    w.flush_due()
    assert w.rows_written == 0
    clock.advance(0.1)
    w.write(pl.DataFrame())  # an idle tick: empty micro-batch without columns
    w.flush_due()
    assert w.rows_written == 3 and w.buffered_rows == 0


def test_bytes_threshold_bounds_file_size(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info, flush_bytes=64 * 1024)
    w.write(events(list(range(20_000))))
    w.flush_due()
    assert w.files_committed >= 3
    entries = load_entries(w.store, "events")
    assert all(e.rows < 20_000 for e in entries)
    assert w.rows_written + w.buffered_rows == 20_000


def test_layout_manifest_and_file_metadata(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0, 30, 90, 150]))  # event times 10:59:00 .. 11:01:30 span two hours
    w.flush_all()
    files = [p.relative_to(tmp_path / "events").as_posix() for p in parquet_files(tmp_path)]
    assert files == ["date=2026-03-01/hour=10/t+0+00000000000000000000.parquet", "date=2026-03-01/hour=11/t+0+00000000000000000090.parquet"]
    (entry,) = load_entries(w.store, "events")
    assert entry.coverage == {"t+0": [0, 150]}
    assert entry.model_versions == {"sentiment": "vader-3.3.2"} and entry.config_hash == "cfg123"
    for f in entry.files:
        data = (tmp_path / "events" / f.path).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest() and f.bytes == len(data)
        meta = pq.read_metadata(io.BytesIO(data))
        assert meta.num_rows == f.rows
        assert json.loads(meta.metadata[b"driftline.key_ranges"]) == f.key_ranges
    assert entry.files[1].key_ranges["src_offset"] == [90, 150] and entry.files[1].partition == {"date": "2026-03-01", "hour": "11"}
    rows = committed_rows(tmp_path, "events")
    assert "raw" not in rows.columns and rows.height == 4
    assert not list((tmp_path / "events" / "_staging").iterdir())


def test_partitioning_override_from_config(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info, datasets={"events": DatasetSinkConfig(partition_by=["date"])})
    w.write(events([0, 90]))
    w.flush_all()
    assert [p.parent.name for p in parquet_files(tmp_path)] == ["date=2026-03-01"]
    w2 = make(events_spec, tmp_path / "flat", run_info, datasets={"events": DatasetSinkConfig(partition_by=[])})
    w2.write(events([0]))
    w2.flush_all()
    assert [p.parent.name for p in parquet_files(tmp_path / "flat")] == ["events"]


def test_null_event_time_goes_to_the_hive_default_partition(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0]).with_columns(event_time=None))
    w.flush_all()
    (path,) = parquet_files(tmp_path)
    assert path.parent.name == "hour=__HIVE_DEFAULT_PARTITION__"


def test_restart_skips_replayed_rows_and_counts_them(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events(list(range(100))))
    w.flush_all()
    w2 = make(events_spec, tmp_path, run_info)
    w2.write(events(list(range(50, 150))))  # 50 replayed, 50 new
    w2.flush_all()
    assert (w2.rows_replayed, w2.rows_written) == (50, 50)
    rows = committed_rows(tmp_path, "events")
    assert rows["src_offset"].sort().to_list() == list(range(150))


def test_a_topic_partition_moved_to_another_writer_skips_what_the_first_committed(tmp_path, events_spec, run_info) -> None:
    """A routing change (an upgrade, see operators/placement.py's cover_part) sends a
    topic-partition's replay to another sink partition: the replay filter is the whole
    dataset's committed offsets, not the writer's own."""
    cfg = SinksConfig(root=str(tmp_path))
    first = DatasetWriter(events_spec, cfg, store=open_store(cfg.root, fsync=cfg.fsync), run_info=run_info, clock=FakeClock(T0), writer_id="enrich.events-p0")
    first.write(events(list(range(100))))
    first.flush_all()
    moved = DatasetWriter(events_spec, cfg, store=open_store(cfg.root, fsync=cfg.fsync), run_info=run_info, clock=FakeClock(T0), writer_id="enrich.events-p1")
    moved.write(events(list(range(60, 130))))  # the restart replays from the snapshot at offset 60
    moved.flush_all()
    assert (moved.rows_replayed, moved.rows_written) == (40, 30)
    rows = committed_rows(tmp_path, "events")
    assert rows["src_offset"].sort().to_list() == list(range(130))
    assert {e.writer for e in load_entries(open_store(str(tmp_path)), "events")} == {"enrich.events-p0", "enrich.events-p1"}


def test_partitions_have_independent_watermarks(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(pl.concat([events([0, 1], partition=0), events([0, 1], partition=1), events([0], topic="u")]))
    w.flush_all()
    assert w.files_committed == 3
    w2 = make(events_spec, tmp_path, run_info)
    w2.write(pl.concat([events([1, 2], partition=0), events([2], partition=1), events([0, 1], topic="u")]))
    w2.flush_all()
    assert (w2.rows_replayed, w2.rows_written) == (2, 3)


def test_snapshot_round_trip_restores_uncommitted_rows(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0, 1, 2]))
    state = w.snapshot()
    del w  # "crash": nothing was committed
    w2 = make(events_spec, tmp_path, run_info, resume=state)
    assert w2.buffered_rows == 3
    w2.flush_all()
    assert committed_rows(tmp_path, "events")["src_offset"].to_list() == [0, 1, 2]


def test_crash_between_commit_and_next_snapshot(tmp_path, events_spec, run_info) -> None:
    """Snapshot S holds rows 0-2; rows 3-4 arrive, everything commits, crash before the next
    snapshot; the restart restores S and Bytewax replays 3-4: nothing is written twice."""
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0, 1, 2]))
    state = w.snapshot()
    w.write(events([3, 4]))
    w.flush_all()
    w2 = make(events_spec, tmp_path, run_info, resume=state)
    assert w2.buffered_rows == 0 and w2.rows_replayed == 3
    w2.write(events([3, 4, 5]))
    w2.flush_all()
    rows = committed_rows(tmp_path, "events")
    assert rows["src_offset"].sort().to_list() == [0, 1, 2, 3, 4, 5]


class Crash(Exception):
    pass


def test_crash_mid_write_leaves_only_a_temp_that_restart_removes(tmp_path, events_spec, run_info, monkeypatch) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0, 1]))
    state = w.snapshot()
    real = LocalStore.write_durable

    def half_then_crash(self, path, data):
        real(self, path, data[: len(data) // 2])
        raise Crash

    monkeypatch.setattr(LocalStore, "write_durable", half_then_crash)
    with pytest.raises(Crash):
        w.flush_all()
    monkeypatch.setattr(LocalStore, "write_durable", real)
    assert list((tmp_path / "events" / "_staging").iterdir()) and not parquet_files(tmp_path)
    w2 = make(events_spec, tmp_path, run_info, resume=state)
    assert not list((tmp_path / "events" / "_staging").iterdir())
    w2.flush_all()
    assert committed_rows(tmp_path, "events")["src_offset"].to_list() == [0, 1]


def test_crash_before_manifest_entry_recommits_from_snapshot(tmp_path, events_spec, run_info, monkeypatch) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0, 1]))
    state = w.snapshot()

    def crash(*_a, **_k):
        raise Crash

    monkeypatch.setattr(writer_mod, "append_entry", crash)
    with pytest.raises(Crash):
        w.flush_all()
    monkeypatch.undo()
    w2 = make(events_spec, tmp_path, run_info, resume=state)
    w2.flush_all()
    assert committed_rows(tmp_path, "events")["src_offset"].to_list() == [0, 1]
    assert len(load_entries(w2.store, "events")) == 1


def test_crash_after_manifest_entry_rolls_forward(tmp_path, events_spec, run_info, monkeypatch) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0, 1]))
    state = w.snapshot()

    def crash(*_a, **_k):
        raise Crash

    monkeypatch.setattr(LocalStore, "publish", crash)
    with pytest.raises(Crash):
        w.flush_all()
    monkeypatch.undo()
    assert not parquet_files(tmp_path)  # committed in the manifest, not yet visible
    w2 = make(events_spec, tmp_path, run_info, resume=state)
    assert w2.rows_replayed == 2 and w2.buffered_rows == 0
    (entry,) = load_entries(w2.store, "events")
    data = (tmp_path / "events" / entry.files[0].path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.files[0].sha256


def test_missing_committed_file_refuses_to_start(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info)
    w.write(events([0]))
    w.flush_all()
    parquet_files(tmp_path)[0].unlink()
    with pytest.raises(ManifestError, match="gone"):
        make(events_spec, tmp_path, run_info)


def test_committed_files_are_never_rewritten(tmp_path, events_spec, run_info) -> None:
    w = make(events_spec, tmp_path, run_info, flush_rows=10)
    w.write(events(list(range(10))))
    w.flush_due()
    (first,) = parquet_files(tmp_path)
    before = (first.read_bytes(), first.stat().st_mtime_ns, first.stat().st_ino)
    for _ in range(3):  # further runs, restarts and replays
        again = make(events_spec, tmp_path, run_info, flush_rows=10)
        again.write(events(list(range(25))))
        again.flush_all()
    assert (first.read_bytes(), first.stat().st_mtime_ns, first.stat().st_ino) == before
    assert committed_rows(tmp_path, "events")["src_offset"].sort().to_list() == list(range(25))


def test_window_keyed_dataset_dedups_exact_keys(tmp_path, window_spec, run_info) -> None:
    w = make(window_spec, tmp_path, run_info)
    w.write(windows([T0, T0, T0 + timedelta(minutes=1)], ["a", "b", "a"]))
    w.flush_all()
    w2 = make(window_spec, tmp_path, run_info)
    w2.write(windows([T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1)], ["a", "a", "b"]))
    w2.flush_all()
    assert (w2.rows_replayed, w2.rows_written) == (2, 1)
    rows = committed_rows(tmp_path, "metrics")
    assert rows.height == 4 and rows.select("window_start", "key").is_duplicated().sum() == 0
    assert all(p.name.startswith("20260301T1059") or p.name.startswith("20260301T1100") for p in parquet_files(tmp_path))


def test_duplicates_inside_one_buffer_are_written_once(tmp_path, window_spec, run_info) -> None:
    w = make(window_spec, tmp_path, run_info)
    w.write(windows([T0], ["a"]))
    w.write(windows([T0], ["a"]))
    w.flush_all()
    assert (w.rows_written, w.rows_replayed) == (1, 1)


def test_object_store_without_rename(run_info, events_spec) -> None:
    root = f"memory://driftline-test-{uuid.uuid4().hex[:8]}"
    w = make(events_spec, root, run_info)
    w.write(events([0, 1, 2]))
    w.flush_all()
    store = open_store(root)
    assert [p for p in store.list_files("events") if p.endswith(".parquet")] == ["events/date=2026-03-01/hour=10/t+0+00000000000000000000.parquet"]
    assert not [p for p in store.list_files("events/_staging")]
    w2 = make(events_spec, root, run_info)
    w2.write(events([2, 3]))
    w2.flush_all()
    assert committed_rows(root, "events")["src_offset"].to_list() == [0, 1, 2, 3]


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
@pytest.mark.parametrize("point", ["mid_write", "before_manifest", "after_manifest", "after_publish"])
def test_fault_hook_exits_like_sigkill_and_restart_recovers(tmp_path, point, background) -> None:
    """A real process exit at each commit point (on the commit thread with ``background``),
    then a restart from the pre-crash snapshot."""
    script = textwrap.dedent(
        f"""
        import pickle, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from parquet_helpers import events, T0
        from driftline.clock import FakeClock
        from driftline.config.sinks import SinksConfig
        from driftline.sinks.parquet import DatasetSpec, DatasetWriter, RunInfo, open_store, KAFKA_KEY
        from parquet_helpers import EVENTS_SCHEMA
        spec = DatasetSpec("events", EVENTS_SCHEMA, KAFKA_KEY, "event_time")
        cfg = SinksConfig(root={str(tmp_path)!r}, flush_rows=5)
        w = DatasetWriter(spec, cfg, store=open_store(cfg.root), run_info=RunInfo("0.1.0", "x"), clock=FakeClock(T0), background={background!r})
        w.write(events(list(range(3))))
        open({str(tmp_path / "snap.pkl")!r}, "wb").write(pickle.dumps(w.snapshot()))
        w.write(events(list(range(3, 12))))
        w.flush_due()
        w.snapshot()  # the epoch's end: waits for the background commits
        """
    )
    env = {**os.environ, "DRIFTLINE_FAULT": f"{point}:2"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 137, proc.stderr
    assert "fault_injected" in proc.stderr
    import pickle

    from driftline.sinks.parquet import KAFKA_KEY, DatasetSpec, RunInfo

    from parquet_helpers import EVENTS_SCHEMA

    state = pickle.loads((tmp_path / "snap.pkl").read_bytes())
    spec = DatasetSpec("events", EVENTS_SCHEMA, KAFKA_KEY, "event_time")
    w = make(spec, tmp_path, RunInfo("0.1.0", "x"), resume=state, flush_rows=5)
    w.write(events(list(range(3, 12))))  # Bytewax replays everything after the snapshot
    w.flush_all()
    rows = committed_rows(tmp_path, "events")
    assert rows["src_offset"].sort().to_list() == list(range(12))
    assert not [p for p in (tmp_path / "events" / "_staging").iterdir()]
