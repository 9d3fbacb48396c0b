"""The sink inside real Bytewax dataflows, including Bytewax's own abort-and-resume."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import polars as pl
import pytest
from prometheus_client import REGISTRY
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from driftline.clock import FakeClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import ParquetDatasetSink, SinkSchemaError, load_entries, open_store, parquet_output

from parquet_helpers import T0, events


def committed(root: Path, dataset: str = "events") -> pl.DataFrame:
    store = open_store(str(root))
    frames = [pl.read_parquet(io.BytesIO(store.read(f"{dataset}/{f.path}"))) for e in load_entries(store, dataset) for f in e.files]
    return pl.concat(frames) if frames else pl.DataFrame()


def flow_of(items: list, sink: ParquetDatasetSink) -> Dataflow:
    flow = Dataflow("sink_test")
    frames = op.input("in", flow, TestingSource(items))
    parquet_output("events_parquet", frames, sink)
    return flow


def test_flow_writes_every_row_once_and_close_commits_the_rest(tmp_path, events_spec, run_info) -> None:
    sink = ParquetDatasetSink(events_spec, SinksConfig(root=str(tmp_path), flush_rows=25), run_info=run_info, clock=FakeClock(T0))
    items = [events(list(range(i, i + 10))) for i in range(0, 100, 10)] + [pl.DataFrame()]
    run_main(flow_of(items, sink))
    rows = committed(tmp_path)
    assert rows["src_offset"].to_list() == list(range(100))
    assert len(load_entries(sink.store, "events")) == 4  # 30, 30, 30 (cut on batch-aligned offsets) + 10 at close


def test_abort_and_resume_from_recovery_is_exactly_once(tmp_path, events_spec, run_info) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    sink = ParquetDatasetSink(events_spec, SinksConfig(root=str(tmp_path / "out"), flush_rows=15), run_info=run_info, clock=FakeClock(T0))
    items: list = []
    for i in range(0, 120, 10):
        items.append(events(list(range(i, i + 10))))
        if i in (30, 70):
            items.append(TestingSource.ABORT())
    flow = flow_of(items, sink)
    cfg = RecoveryConfig(str(recovery))
    replayed_before = REGISTRY.get_sample_value("driftline_sink_rows_replayed_total", {"dataset": "events"}) or 0.0
    seen = []
    for _ in range(3):  # the first two executions abort; each resumes from the recovery folder
        run_main(flow, epoch_interval=timedelta(seconds=0), recovery_config=cfg)
        seen.append(committed(tmp_path / "out").height)
    assert seen[0] < seen[1] < seen[2]
    assert seen[0] < 120
    replayed = (REGISTRY.get_sample_value("driftline_sink_rows_replayed_total", {"dataset": "events"}) or 0.0) - replayed_before
    assert replayed > 0  # the resume really replayed committed rows, and they were skipped
    rows = committed(tmp_path / "out")
    assert rows["src_offset"].sort().to_list() == list(range(120))


def test_several_sink_partitions_route_by_topic_partition(tmp_path, events_spec, run_info) -> None:
    sink = ParquetDatasetSink(events_spec, SinksConfig(root=str(tmp_path), partitions=3), run_info=run_info, clock=FakeClock(T0))
    batch = pl.concat([events(list(range(5)), partition=p) for p in range(4)])
    routed = sink.route(batch)
    assert [k for k, _ in routed] == ["0", "1", "2"]
    assert sum(f.height for _, f in routed) == 20
    for _, f in routed:  # a topic-partition never spans two sink partitions
        assert f.height == 0 or f.select("src_topic", "src_partition").n_unique() <= 4
    seen = [set(f["src_partition"].to_list()) for _, f in routed]
    assert all(a.isdisjoint(b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    run_main(flow_of([batch, pl.DataFrame()], sink))
    assert committed(tmp_path)["src_offset"].len() == 20
    writers = {e.writer for e in load_entries(sink.store, "events")}
    assert writers <= {"p0", "p1", "p2"} and len(writers) >= 2


def test_schema_error_names_the_step(tmp_path, events_spec, run_info) -> None:
    sink = ParquetDatasetSink(events_spec, SinksConfig(root=str(tmp_path)), run_info=run_info)
    with pytest.raises(Exception, match=r"step 'sink_test\.events_parquet\.write'.*dataset 'events'.*column 'src_offset'") as info:
        run_main(flow_of([events([1]).drop("src_offset")], sink))
    assert isinstance(info.value, SinkSchemaError) or "SinkSchemaError" in str(info.value)
