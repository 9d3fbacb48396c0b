"""Count-or-time batching of model calls, order, snapshot/restore, and a real Bytewax run."""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import polars as pl
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from driftline.clock import FakeClock
from driftline.config.models import BatchingConfig, LedgerConfig, ModelsConfig
from driftline.models import MODEL_OUTPUT_SCHEMA, ModelService
from driftline.operators.model_call import ModelCallLogic, ModelCallOutput, ModelCallState, call_models, model_call_builder


@pytest.fixture(scope="module")
def service() -> ModelService:
    return ModelService(ModelsConfig(ledger=LedgerConfig(enabled=False)))


def rows(start: int, n: int) -> pl.DataFrame:
    words = ["great job", "terrible", "a chair"]
    return pl.DataFrame({"event_id": [f"e{i}" for i in range(start, start + n)], "text": [words[i % 3] for i in range(start, start + n)]})


def ids(outputs: list[ModelCallOutput]) -> list[str]:
    return [i for o in outputs for i in o.results["event_id"].to_list()]


def test_call_models_keeps_rows_and_order(service: ModelService) -> None:
    df = rows(0, 10).with_columns(pl.lit("x").alias("extra"))
    out = call_models(df, service)
    assert out.columns[: len(df.columns)] == df.columns
    assert out["event_id"].to_list() == df["event_id"].to_list()
    assert out["model_label"].to_list()[:3] == ["positive", "negative", "neutral"]
    assert set(MODEL_OUTPUT_SCHEMA) <= set(out.columns)


def test_flushes_by_count_keeping_order(service: ModelService) -> None:
    clock = FakeClock()
    logic = ModelCallLogic("model_call", service, BatchingConfig(max_rows=64, max_wait_ms=200), clock)
    emitted: list[ModelCallOutput] = []
    for k in range(3):
        out, _ = logic.on_batch([rows(30 * k, 30)])
        emitted += list(out)
        clock.advance(0.01)
    assert [o.results.height for o in emitted] == [64]
    assert logic.snapshot().rows == 26
    out, _ = logic.on_batch([rows(90, 200)])  # a large poll is cut into full batches
    emitted += list(out)
    assert sum(o.results.height for o in emitted) == 256 and logic.snapshot().rows == 34
    out, _ = logic.on_eof()
    emitted += list(out)
    assert ids(emitted) == [f"e{i}" for i in range(290)]


def test_flushes_by_wait_time(service: ModelService) -> None:
    clock = FakeClock()
    logic = ModelCallLogic("model_call", service, BatchingConfig(max_rows=64, max_wait_ms=200), clock)
    assert logic.notify_at() is None
    start = clock.now()
    logic.on_batch([rows(0, 5)])
    clock.advance(0.15)
    logic.on_batch([rows(5, 5)])
    assert logic.notify_at() == start + timedelta(milliseconds=200)  # the oldest row decides
    out, _ = logic.on_notify()
    assert list(out) == []  # not yet due
    clock.advance(0.05)
    out, _ = logic.on_notify()
    assert ids(list(out)) == [f"e{i}" for i in range(10)]
    assert logic.notify_at() is None


def test_snapshot_restores_waiting_rows(service: ModelService) -> None:
    clock = FakeClock()
    build = model_call_builder("model_call", service, BatchingConfig(max_rows=64, max_wait_ms=200), clock)
    logic = build(None)
    logic.on_batch([rows(0, 7), rows(7, 3)])
    snap = pickle.loads(pickle.dumps(logic.snapshot()))
    assert isinstance(snap, ModelCallState) and snap.rows == 10
    logic.on_batch([rows(10, 1)])  # later changes do not leak into the snapshot
    assert snap.rows == 10
    resumed = build(snap)
    assert resumed.notify_at() == clock.now() + timedelta(milliseconds=200)
    out, _ = resumed.on_eof()
    assert ids(list(out)) == [f"e{i}" for i in range(10)]


def test_wrong_item_type_names_the_step(service: ModelService) -> None:
    logic = ModelCallLogic("model_call", service, BatchingConfig(), FakeClock())
    with pytest.raises(TypeError, match=r"step 'model_call': expected Polars DataFrames .* received dict"):
        logic.on_batch([{"text": "hi"}])  # type: ignore[list-item]


def test_in_a_bytewax_dataflow(tmp_path: Path) -> None:
    svc = ModelService(ModelsConfig(ledger=LedgerConfig(path=str(tmp_path / "l.sqlite"))))
    frames = [rows(i * 25, 25) for i in range(8)]
    flow = Dataflow("model_call_test")
    s = op.input("in", flow, TestingSource(frames))
    keyed = op.key_on("key", s, lambda _df: "models")
    out = op.stateful_batch("model_call", keyed, model_call_builder("model_call", svc, BatchingConfig(max_rows=64, max_wait_ms=200)))
    results = op.map("results", out, lambda kv: kv[1].results)
    collected: list[pl.DataFrame] = []
    op.output("out", results, TestingSink(collected))
    run_main(flow)
    got = pl.concat(collected)
    assert got["event_id"].to_list() == [f"e{i}" for i in range(200)]
    assert got["model_tier"].unique().to_list() == ["local"]
    assert [f.height for f in collected][:3] == [64, 64, 64]
    svc.close()
