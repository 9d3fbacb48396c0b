"""Background commits (what the Bytewax sink uses): the same files and manifest entries
as inline commits, snapshots that wait for them, bounded pending commits, and failures
that surface naming the step and dataset and stop the writer."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from driftline.clock import FakeClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import DatasetWriter, LocalStore, SinkCommitError, load_entries, open_store
from driftline.sinks.parquet import writer as writer_mod

from parquet_helpers import T0, events, windows


def make(spec, root: Path, run_info, *, background: bool, clock: FakeClock | None = None, **settings) -> DatasetWriter:
    cfg = SinksConfig(root=str(root), **settings)
    return DatasetWriter(spec, cfg, store=open_store(cfg.root, fsync=cfg.fsync), run_info=run_info, clock=clock or FakeClock(T0), background=background)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (committed files, manifest entries), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Gate:
    """Holds the commit thread inside ``encode_parquet`` until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        real = writer_mod.encode_parquet

        def held(*args, **kwargs):
            self.entered.release()
            assert self.release.wait(30), "the test never released the commit thread"
            return real(*args, **kwargs)

        monkeypatch.setattr(writer_mod, "encode_parquet", held)


def test_background_commits_write_the_same_bytes_as_inline_commits(tmp_path, events_spec, window_spec, run_info) -> None:
    for mode in ("inline", "background"):
        clock = FakeClock(T0)
        ev = make(events_spec, tmp_path / mode, run_info, background=mode == "background", clock=clock, flush_rows=40, flush_seconds=5)
        win = make(window_spec, tmp_path / mode, run_info, background=mode == "background", clock=clock, flush_rows=3)
        for start in range(0, 200, 25):  # rows cross an hour boundary: several files per commit
            ev.write(events(list(range(start, start + 25)), step_s=30.0))
            ev.write(events(list(range(start, start + 10)), partition=1, step_s=60.0))
            win.write(windows([T0] * 2, [f"k{start}", f"j{start}"]))
            ev.flush_due()
            win.flush_due()
            clock.advance(2)
        ev.snapshot()
        ev.close()
        win.close()
    inline, background = tree(tmp_path / "inline"), tree(tmp_path / "background")
    assert len([p for p in inline if p.endswith(".parquet")]) >= 10
    assert inline == background


def test_snapshot_waits_for_the_pending_commit(tmp_path, events_spec, run_info, monkeypatch) -> None:
    gate = Gate(monkeypatch)
    w = make(events_spec, tmp_path, run_info, background=True, flush_rows=10)
    w.write(events(list(range(15)), step_s=0.0))
    w.flush_due()  # returns while the commit thread encodes
    assert gate.entered.acquire(timeout=30)
    assert w.pending_commits == 1 and w.buffered_rows == 5 and w.rows_written == 0 and not load_entries(w.store, "events")
    assert w.oldest_buffered_us is not None  # the pending rows count as uncommitted
    threading.Timer(0.3, gate.release.set).start()
    started = time.perf_counter()
    state = w.snapshot()
    assert time.perf_counter() - started >= 0.2  # it waited for the commit
    (entry,) = load_entries(w.store, "events")
    assert entry.rows == 10 and w.rows_written == 10
    assert list(state.buffers) == ["t+0"]  # only the 5 rows not committed
    w.close()


def test_at_most_max_pending_commits_per_writer(tmp_path, events_spec, run_info, monkeypatch) -> None:
    gate = Gate(monkeypatch)
    w = make(events_spec, tmp_path, run_info, background=True, flush_rows=10)
    w.write(events(list(range(10 * (writer_mod.MAX_PENDING + 2))), step_s=0.0))
    done = threading.Event()
    t = threading.Thread(target=lambda: (w.flush_due(), done.set()))
    t.start()
    assert gate.entered.acquire(timeout=30)
    time.sleep(0.3)
    assert not done.is_set() and w.pending_commits == writer_mod.MAX_PENDING  # the next commit waits
    gate.release.set()
    t.join(30)
    assert done.is_set()
    w.close()
    assert w.rows_written == 10 * (writer_mod.MAX_PENDING + 2) and len(load_entries(w.store, "events")) == writer_mod.MAX_PENDING + 2


def test_a_failed_commit_surfaces_at_the_next_call_and_stops_the_writer(tmp_path, events_spec, run_info, monkeypatch) -> None:
    real = LocalStore.write_durable

    def full_disk(self, path, data):
        if "_staging" in path and "000000000000" in path:
            raise OSError(28, "No space left on device")
        return real(self, path, data)

    monkeypatch.setattr(LocalStore, "write_durable", full_disk)
    w = make(events_spec, tmp_path, run_info, background=True, flush_rows=10)
    w.write(events(list(range(20)), step_s=0.0))
    # two commits due; the first fails on the commit thread, and the second must not run.
    # The failure surfaces at the writer's next call: the hand-over of the second commit
    # when the first had already failed by then (a loaded machine), else the snapshot.
    try:
        w.flush_due()
    except SinkCommitError as exc:
        failed = exc
    else:
        with pytest.raises(SinkCommitError) as info:
            w.snapshot()
        failed = info.value
    assert re.search(r"step 'parquet', dataset 'events': commit p0-000000000000 of 10 row\(s\) failed: OSError.*No space", str(failed))
    assert isinstance(failed.__cause__, OSError)
    assert not load_entries(w.store, "events")  # the later commit would have raised the watermark over the lost rows
    with pytest.raises(SinkCommitError):
        w.write(events([20]))
    with pytest.raises(SinkCommitError):
        w.close()
