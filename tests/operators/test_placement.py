"""operators/placement.py predicts where Bytewax runs keys, sink partitions and source
partitions; these tests hold the predictions against real multi-worker Bytewax runs (the
worker of each thread learnt from a dynamic sink's ``worker_index``), and check that
:class:`~driftline.operators.spread.Spreader` gives the free work out in the shares that
even the loads out.
"""

from __future__ import annotations

import threading
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main

from driftline.operators import spread
from driftline.operators.placement import COSTS, cover_part, fixed_loads, sink_worker, source_part, source_part_coordinates, source_worker, state_worker, water_fill, worker_keys
from driftline.operators.spread import Piece, Spreader, to_workers

KEYS = [f"bench-e2e-{i:04x}+{p}" for i in range(12) for p in range(3)] + [f"events:{p}" for p in range(8)] + ["", "w0", "unpartitioned"]


class _Seen:
    """Which thread did what, and each thread's worker index."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker_of_thread: dict[int, int] = {}
        self.thread_of: dict[Any, int] = {}

    def saw(self, what: Any) -> None:
        with self.lock:
            self.thread_of[what] = threading.get_ident()

    def worker(self, what: Any) -> int:
        return self.worker_of_thread[self.thread_of[what]]


class _WorkerIndexSink(DynamicSink[Any]):
    """Learns each worker thread's index (Bytewax passes it to a dynamic sink's builder)."""

    def __init__(self, seen: _Seen) -> None:
        self.seen = seen

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        seen = self.seen

        class _Part(StatelessSinkPartition[Any]):
            def write_batch(self, items: list[Any]) -> None:
                return None

        with seen.lock:
            seen.worker_of_thread[threading.get_ident()] = worker_index
        return _Part()


class _PartsSink(FixedPartitionedSink[Any, None]):
    """A sink of ``parts`` partitions named like driftline's (``"0"``, ``"1"``, ...) that notes where each writes."""

    def __init__(self, parts: int, seen: _Seen) -> None:
        self.parts, self.seen = parts, seen

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.parts)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSinkPartition[Any, None]:
        seen = self.seen

        class _Part(StatefulSinkPartition[Any, None]):
            def write_batch(self, values: list[Any]) -> None:
                for v in values:
                    seen.saw(("sink", v))

            def snapshot(self) -> None:
                return None

        return _Part()


class _PartsSource(FixedPartitionedSource[int, None]):
    """Source partitions named like the Kafka source's (``<partition>-<topic>``), noting their reader."""

    def __init__(self, names: list[str], seen: _Seen) -> None:
        self.names, self.seen = names, seen

    def list_parts(self) -> list[str]:
        return list(self.names)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSourcePartition[int, None]:
        seen = self.seen

        class _Part(StatefulSourcePartition[int, None]):
            done = False

            def next_batch(self) -> list[int]:
                if self.done:
                    raise StopIteration
                self.done = True
                seen.saw(("source", for_part))
                return [0]

            def snapshot(self) -> None:
                return None

        return _Part()


def _run(flow: Dataflow, workers: int) -> None:
    cluster_main(flow, [], 0, worker_count_per_proc=workers)


@pytest.mark.parametrize("workers", [2, 3])
def test_state_sink_and_source_placement_match_bytewax(workers: int) -> None:
    seen = _Seen()
    flow = Dataflow("placement")
    keys = op.input("keys", flow, TestingSource(KEYS))
    keyed = op.key_on("key", keys, lambda k: k)

    def note(state: None, key: str) -> tuple[None, str]:
        seen.saw(("state", key))
        return None, key

    op.output("stateful_idx", op.stateful_map("stateful", keyed, note), _WorkerIndexSink(seen))
    parts = 5
    op.output("parts", op.map("to_parts", op.input("part_items", flow, TestingSource(list(range(parts)))), lambda i: (str(i), i)), _PartsSink(parts, seen))
    names = [source_part("events", p) for p in (0, 1, 2, 3, 10)]
    op.output("source_idx", op.input("sources", flow, _PartsSource(names, seen)), _WorkerIndexSink(seen))
    _run(flow, workers)
    assert sorted(set(seen.worker_of_thread.values())) == list(range(workers))
    assert {k: seen.worker(("state", k)) for k in KEYS} == {k: state_worker(k, workers) for k in KEYS}
    assert {i: seen.worker(("sink", i)) for i in range(parts)} == {i: sink_worker(i, parts, workers) for i in range(parts)}
    assert {n: seen.worker(("source", n)) for n in names} == {n: source_worker(n, names, workers) for n in names}


@pytest.mark.parametrize("workers", [2, 3])
def test_to_workers_runs_each_piece_on_its_worker(workers: int) -> None:
    seen = _Seen()
    pieces = [Piece(f"t:{i % 3}", i, 0, 1, i, to=i % workers) for i in range(12)]
    flow = Dataflow("to_workers")
    routed = to_workers("spread_pieces", op.input("in", flow, TestingSource(pieces)), workers=workers)

    def note(p: Piece[int]) -> Piece[int]:
        seen.saw(("piece", p.value))
        return p

    op.output("idx", op.map("note", routed, note), _WorkerIndexSink(seen))
    _run(flow, workers)
    assert {p.value: seen.worker(("piece", p.value)) for p in pieces} == {p.value: p.to for p in pieces}
    assert [state_worker(k, workers) for k in worker_keys(workers)] == list(range(workers))


def test_water_fill_levels_the_loads() -> None:
    fixed = [0.40, 0.10, 0.25]
    shares = water_fill(fixed, 0.45)
    loads = [f + s * 0.45 for f, s in zip(fixed, shares, strict=True)]
    assert shares[0] == 0.0 and sum(shares) == pytest.approx(1.0)
    assert loads[1] == pytest.approx(loads[2]) and loads[1] >= 0.40 - 1e-9  # the two lighter workers end level, above none
    assert water_fill([0.9, 0.0], 0.1) == [0.0, 1.0]  # too little free work to level: all of it to the lighter one
    assert water_fill([0.2, 0.2], 0.6) == [0.5, 0.5]


def test_fixed_loads_follow_the_sinks_partitions() -> None:
    names = [f"topic+{p}" for p in range(3)]
    one = fixed_loads(names, 2)  # every sink partition "0" is on worker 0
    two = fixed_loads(names, 2, parquet_parts=2, kafka_parts=2)
    assert sum(one) == pytest.approx(sum(two)) == pytest.approx(1.0 - COSTS["free"])
    moved = sum(COSTS[c] for c in ("parquet", "kafka")) * sum(1 for n in names if cover_part(n, 2) == 1) / 3
    assert two[1] - one[1] == pytest.approx(moved)


def test_spreader_gives_each_partition_out_in_the_shares() -> None:
    import polars as pl

    names = [f"topic+{p}" for p in range(3)]
    spreader = Spreader(names, workers=2, rows=100)
    shares = spreader.shares()
    rows = {0: 0, 1: 0}
    for p in range(3):
        for b in range(40):
            frame = pl.DataFrame({"src_topic": ["topic"] * 150, "src_partition": [p] * 150, "src_offset": list(range(b * 150, b * 150 + 150))})
            for item in spreader.split(frame):
                if isinstance(item, Piece):
                    rows[item.to] += len(item.value)
    total = sum(rows.values())
    assert [rows[w] / total for w in (0, 1)] == pytest.approx(shares, abs=0.01)
    # idle ticks go straight to their reorder key's worker
    tick = Spreader(names, workers=2).split(pl.DataFrame())
    assert len(tick) == 1 and tick[0].to == state_worker("", 2)


def test_spreader_follows_the_cluster_size_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spread, "WORKERS", 3)
    assert len(Spreader(["t+0"]).shares()) == 3
    monkeypatch.setattr(spread, "WORKERS", 1)
    items = Spreader(["t+0"]).split([1, 2])  # one worker: nothing cut, nothing to choose
    assert [type(i).__name__ for i in items] == ["BatchHeader", "Piece"] and items[1].to == 0


@pytest.mark.parametrize(("homes", "shares"), [([1, 0, 1], [0.5, 0.5]), ([0, 0, 0], [0.1, 0.9]), ([0, 1, 2, 2], [0.2, 0.5, 0.3]), ([1, 1], [0.0, 1.0])])
def test_local_plan_keeps_the_shares_and_as_much_local_work_as_they_allow(homes: list[int], shares: list[float]) -> None:
    from driftline.operators.placement import local_plan

    keys = {f"t:{i}": h for i, h in enumerate(homes)}
    plan = local_plan(keys, shares)
    n = len(homes)
    assert all(sum(row) == pytest.approx(1.0) for row in plan.values())
    assert [sum(plan[k][w] for k in keys) / n for w in range(len(shares))] == pytest.approx(shares)
    local = sum(plan[k][h] for k, h in keys.items()) / n
    best = sum(min(share, homes.count(w) / n) for w, share in enumerate(shares))  # no plan keeps more rows at home
    assert local == pytest.approx(best)


def test_source_part_names_round_trip_and_refuse_other_names() -> None:
    for topic, partition in (("events", 0), ("bench-e2e-0000004d", 11), ("a.b_c-9", 3)):
        assert source_part_coordinates(source_part(topic, partition)) == (topic, partition)
    for bad in ("events", "-events", "x-events", "2-", "events+2"):
        with pytest.raises(ValueError, match="partition-topic"):
            source_part_coordinates(bad)


def test_a_topic_partitions_writers_share_the_worker_of_its_model_calls() -> None:
    """With the worker count dividing the sink partitions, each input partition's sink
    partition sits on the worker of its model-step key, whatever the topic's name."""
    for topic in ("events", "bench-e2e-9b10c88f", "bench-e2e-83d95c8c", "t"):
        for parts, workers in ((2, 2), (4, 2), (4, 4), (6, 3)):
            for p in range(8):
                name = f"{topic}+{p}"
                assert sink_worker(cover_part(name, parts), parts, workers) == state_worker(f"{topic}:{p}", workers), (topic, parts, workers, p)


def test_sink_partitions_spread_the_partitions_of_a_topic() -> None:
    """CRC-32's low bits put partitions 0-3 of any topic on one writer of two; the hash
    used now gives each topic's partitions out independently."""
    import collections

    spreads = collections.Counter(tuple(cover_part(f"topic-{i}+{p}", 2) for p in range(4)) for i in range(400))
    assert len(spreads) == 16 and min(spreads.values()) > 400 / 16 / 2
