"""The stages' helper thread (operators/ahead.py): order, depth, errors, and pieces in
flight across a snapshot, a resume and an abort."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from driftline.clock import FakeClock
from driftline.operators.ahead import POLL, START_SEQ, AheadLogic, AheadState, StageThreads, StartMarkers, run_ahead
from driftline.operators.spread import BatchHeader, Piece, ReorderLogic


def _pieces(n: int) -> list[Piece[int]]:
    return [Piece("t:0", i, 0, 1, i) for i in range(n)]


def test_pieces_pass_on_in_arrival_order_whatever_each_takes() -> None:
    rng = random.Random(3)
    delays = [rng.choice([0.0, 0.0, 0.002, 0.01]) for _ in range(60)]
    threads, seen = StageThreads(), set()

    def slow_square(pc: Piece[int]) -> Piece[int]:
        seen.add(threading.current_thread().name)
        time.sleep(delays[pc.value])
        return pc.map(lambda v: v * v)

    flow, out = Dataflow("ahead_order"), []
    up = op.input("in", flow, TestingSource(_pieces(60), batch_size=7))
    op.output("out", run_ahead("square", up, slow_square, threads=threads, workers=1), TestingSink(out))
    run_main(flow)
    threads.shutdown()
    assert [p.value for p in out] == [i * i for i in range(60)]
    assert len(seen) == 1 and next(iter(seen)).startswith("driftline-stages")  # one helper, never the worker


def test_inline_runs_on_the_worker_thread_with_the_same_results() -> None:
    worker = []
    flow, out = Dataflow("ahead_inline"), []
    up = op.input("in", flow, TestingSource(_pieces(10), batch_size=3))
    op.output("out", run_ahead("square", up, lambda pc: worker.append(threading.current_thread()) or pc.map(lambda v: v * v), threads=None, workers=1), TestingSink(out))
    run_main(flow)
    assert [p.value for p in out] == [i * i for i in range(10)] and set(worker) == {threading.current_thread()}


def test_at_most_depth_pieces_are_in_flight_and_the_oldest_is_waited_for() -> None:
    gate = threading.Event()
    threads = StageThreads()
    wall = FakeClock()
    logic = AheadLogic("s", lambda pc: gate.wait(5) and pc, None, executor=threads.executor(), depth=2, wall=wall)
    out, discard = logic.on_batch(_pieces(2))
    assert list(out) == [] and not discard  # both in flight
    assert logic.notify_at() == wall.now() + POLL  # and the step looks again soon
    gate.set()
    out, _ = logic.on_batch([Piece("t:0", 2, 0, 1, 2)])  # a third: the oldest is waited for
    assert [p.value for p in out][:1] == [0]
    out, discard = logic.on_eof()
    assert discard and logic.notify_at() is None
    threads.shutdown()


def test_a_piece_in_flight_at_a_snapshot_runs_again_after_a_resume() -> None:
    gate, runs = threading.Event(), []
    threads = StageThreads()

    def stage(pc: Piece[int]) -> Piece[int]:
        runs.append(pc.value)
        gate.wait(5)
        return pc.map(lambda v: -v)

    logic = AheadLogic("s", stage, None, executor=threads.executor(), depth=2)
    out, _ = logic.on_batch(_pieces(2))
    assert list(out) == []
    state = logic.snapshot()
    assert isinstance(state, AheadState) and [p.value for p in state.pending] == [0, 1]  # their inputs, not results
    gate.set()
    again: list[int] = []
    start = StartMarkers()
    resumed = AheadLogic("s", lambda pc: again.append(pc.value) or stage(pc), state, executor=None, start=start)  # what a restart builds from the snapshot
    assert again == [0, 1]  # run again at once: the first execution's results were never passed on
    out, discard = resumed.on_notify()
    assert list(out) == [] and not discard and resumed.notify_at() is not None  # held: the execution's first epoch has not come
    out, discard = resumed.on_batch([Piece("", START_SEQ, 0, 1, None)])  # this worker's start marker
    assert [p.value for p in out] == [0, -1] and discard
    threads.shutdown()


def test_a_resumed_step_passes_its_pieces_on_with_the_first_new_piece() -> None:
    state = AheadState([Piece("t:0", i, 0, 1, i) for i in range(2)])
    resumed = AheadLogic("s", lambda pc: pc.map(lambda v: v + 100), state, executor=None)
    assert list(resumed.on_notify()[0]) == [] and list(resumed.on_eof()[0]) == []  # no marker, no piece: kept for the next execution
    assert resumed.snapshot() == state
    out, discard = resumed.on_batch([Piece("t:0", 2, 0, 1, 2)])
    assert [p.value for p in out] == [100, 101, 102] and discard


def test_a_stage_error_reaches_the_worker_as_it_was_raised() -> None:
    def broken(pc: Piece[int]) -> Piece[int]:
        raise ValueError(f"step 'decode': bad piece {pc.seq}")

    threads = StageThreads()
    logic = AheadLogic("s", broken, None, executor=threads.executor(), depth=1)
    with pytest.raises(ValueError, match="bad piece 0"):  # from on_batch when the helper was quick, else from on_eof
        logic.on_batch(_pieces(1))
        logic.on_eof()
    with pytest.raises(TypeError, match="expected a Piece, received str"):
        logic.on_batch(["raw"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="expected AheadState"):
        AheadLogic("s", broken, {"pending": []}, executor=None)  # type: ignore[arg-type]
    threads.shutdown()


def _flow(items: list[Any], out: list[Any], threads: StageThreads, gate: threading.Event) -> Dataflow:
    def stage(pc: Piece[int]) -> Piece[int]:
        if pc.seq == 5:  # the last piece before the abort stays in flight until the test opens the gate
            gate.wait(60)
        return pc.map(lambda v: v * 10)

    flow = Dataflow("ahead_abort")
    up = op.input("in", flow, TestingSource(items))
    op.output("out", run_ahead("stages", up, stage, threads=threads, workers=1), TestingSink(out))
    return flow


def test_pieces_in_flight_when_an_execution_aborts_are_passed_on_after_the_resume(tmp_path: Path) -> None:
    from driftline.runner import run_flow

    rec, threads, gate = tmp_path / "rec", StageThreads(), threading.Event()
    items: list[Any] = [*_pieces(6), TestingSource.ABORT(), *[Piece("t:0", i, 0, 1, i) for i in range(6, 12)]]
    first: list[Any] = []
    run_flow(_flow(items, first, threads, gate), recovery_dir=rec, epoch_interval=0, heap_trim_interval=0)
    # depth 1: each new piece waits for the one before it, so pieces 0-4 were passed on and piece 5 was in flight
    assert [p.value for p in first] == [0, 10, 20, 30, 40]
    gate.set()  # the helper finishes the aborted execution's piece (its result is dropped) and is free for the next
    second: list[Any] = []
    run_flow(_flow(items, second, threads, gate), recovery_dir=rec, epoch_interval=0, heap_trim_interval=0)
    threads.shutdown()
    values = [p.value for p in first + second]
    assert sorted(set(values)) == [10 * i for i in range(12)]  # none lost
    assert [p.value for p in second] == sorted(p.value for p in second)  # in order after the resume


def _reordered_flow(items: list[Any], out: list[Any], threads: StageThreads, slow: set[int]) -> Dataflow:
    """Headers straight to ``reorder``, pieces through the slow stage first: the shape of the flows."""

    def stage(pc: Piece[int]) -> Piece[int]:
        time.sleep(0.3 if pc.value in slow else 0.0)
        return pc.map(lambda v: v * 10)

    flow = Dataflow("ahead_reorder")
    up = op.input("in", flow, TestingSource(items))
    split = op.branch("split", up, lambda i: isinstance(i, BatchHeader))
    pieces = run_ahead("stages", split.falses, stage, threads=threads, workers=1)
    keyed = op.key_on("reorder_key", op.merge("reorder_in", pieces, split.trues), lambda i: i.key)
    op.output("out", op.key_rm("reorder_out", op.stateful_batch("reorder", keyed, lambda st: ReorderLogic("reorder", st))), TestingSink(out))
    return flow


def test_pieces_resumed_from_a_snapshot_reach_a_resumed_step_downstream(tmp_path: Path) -> None:
    """Pieces resumed from the step's snapshot reach ``reorder``, itself resumed, which
    releases every batch once (the step holds them back until the execution's first epoch:
    see the module docstring)."""
    from driftline.runner import run_flow

    rec, threads = tmp_path / "rec", StageThreads()
    batches = [(BatchHeader("t:0", i, 1), Piece("t:0", i, 0, 1, i)) for i in range(12)]
    items: list[Any] = [x for pair in batches[:6] for x in pair] + [TestingSource.ABORT()] + [x for pair in batches[6:] for x in pair]
    outs: list[list[Any]] = []
    for slow in ({4, 5}, set()):  # the pieces before the abort still in flight; then quick
        outs.append([])
        run_flow(_reordered_flow(items, outs[-1], threads, slow), recovery_dir=rec, epoch_interval=0, heap_trim_interval=0)
    threads.shutdown()
    assert len(outs[0]) < 6  # pieces were in flight when the first execution aborted
    assert sorted(set(outs[0] + outs[1])) == [10 * i for i in range(12)]
    assert outs[1] == sorted(outs[1])
