"""DatasetWriter paths that skip copies: one-topic-partition batches, increasing offsets,
one Hive partition or time-ordered runs; each must write what the general path writes."""

from __future__ import annotations

import io

import polars as pl

from driftline.clock import FakeClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import DatasetWriter, load_entries, open_store

from parquet_helpers import T0, events


def _writer(spec, root, run_info, **settings) -> DatasetWriter:
    cfg = SinksConfig(root=str(root), **settings)
    return DatasetWriter(spec, cfg, store=open_store(cfg.root), run_info=run_info, clock=FakeClock(T0))


def _files(root, dataset: str) -> dict[str, pl.DataFrame]:
    store = open_store(str(root))
    return {f.path: pl.read_parquet(io.BytesIO(store.read(f"{dataset}/{f.path}"))) for e in load_entries(store, dataset) for f in e.files}


def test_a_batch_of_two_topic_partitions_and_a_replayed_buffer(tmp_path, events_spec, run_info) -> None:
    w = _writer(events_spec, tmp_path, run_info)
    w.write(pl.concat([events([0, 1, 2], partition=0), events([0, 1], partition=1), events([3], partition=0)]))
    w.write(events([2, 3, 4], partition=0))  # offsets 2 and 3 again, still buffered: written once
    w.flush_all()
    assert (w.rows_written, w.rows_replayed) == (7, 2)
    files = _files(tmp_path, "events")
    p0 = next(df for path, df in files.items() if path.endswith("t+0+00000000000000000000.parquet"))
    p1 = next(df for path, df in files.items() if path.endswith("t+1+00000000000000000000.parquet"))
    assert p0["src_offset"].to_list() == [0, 1, 2, 3, 4] and p1["src_offset"].to_list() == [0, 1]
    w.write(events([3, 4, 5, 6], partition=0))  # a replay straddling the watermark
    w.write(events([7], partition=0))
    w.flush_all()
    assert (w.rows_written, w.rows_replayed) == (10, 4)
    assert sorted(df["src_offset"].to_list() for path, df in _files(tmp_path, "events").items() if "+0+" in path)[-1] == [5, 6, 7]


def test_commits_across_hours_split_into_one_file_per_hour(tmp_path, events_spec, run_info) -> None:
    # T0 is 10:59:00; a step of 30 s puts offsets 0-1 in hour 10 and 2-5 in hour 11
    ordered = _writer(events_spec, tmp_path / "ordered", run_info)
    ordered.write(events(list(range(6)), step_s=30.0))
    ordered.flush_all()
    got = {path.rsplit("/", 1)[0]: df["src_offset"].to_list() for path, df in _files(tmp_path / "ordered", "events").items()}
    assert got == {"date=2026-03-01/hour=10": [0, 1], "date=2026-03-01/hour=11": [2, 3, 4, 5]}
    # rows out of time order (hours interleaved) still land in their hour, in arrival order
    mixed = events([0, 1, 2, 3], step_s=30.0).with_columns(pl.col("event_time").gather([0, 3, 1, 2]))
    shuffled = _writer(events_spec, tmp_path / "mixed", run_info)
    shuffled.write(mixed)
    shuffled.flush_all()
    got = {path.rsplit("/", 1)[0]: df["src_offset"].to_list() for path, df in _files(tmp_path / "mixed", "events").items()}
    assert got == {"date=2026-03-01/hour=10": [0, 2], "date=2026-03-01/hour=11": [1, 3]}
