"""The models stage on several Bytewax workers (issue 13, models part).

Model batches are keyed by input partition, so a 4-partition input spreads over 2
workers of one process; the enriched rows' model results must equal a 1-worker run's,
and daily budgets must hold across the workers (never overrun by more than one batch's
estimate).  Then a rescale: a run stopped half-way with 1 worker resumes with 2 from the
same recovery folder, and the ledger, the response cache and the budgets carry over.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSource, cluster_main

from driftline.config import PipelineConfig, load_config
from driftline.flows.enrich import EnrichIO, build_enrich_flow
from driftline.models import ModelService
from driftline.operators.decode import RawRecord
from driftline.producer import SyntheticProducer
from driftline.runner import ensure_recovery_dir
from driftline.testing import InMemorySink, raw_batches
from driftline.testing.openai_server import Behaviour, OpenAITestServer

PARTITIONS = 4
PER_PARTITION = 200
# what the answer is, not how long it took
COMPARED = [
    "model_task", "model_label", "model_output", "model_confidence", "model_name", "model_version", "model_tier", "model_tier_index",
    "model_fallback_reasons", "model_error_class", "model_retries", "model_input_tokens", "model_output_tokens", "model_cost_usd",
    "model_cached", "model_cost_saved_usd", "model_replayed", "model_budget_event", "model_route",
]


def _batches(seed: int = 11) -> list[list[RawRecord]]:
    """PARTITIONS partitions of PER_PARTITION events, polled in interleaved batches of 50."""
    events = list(SyntheticProducer(seed, pii_rate=0.0).events(PARTITIONS * PER_PARTITION))
    per_part = [raw_batches([e.payload for e in events[p::PARTITIONS]], partition=p, batch_size=50) for p in range(PARTITIONS)]
    return [b for group in zip(*per_part) for b in group]


def _config(root: Path, base_url: str, **models: Any) -> PipelineConfig:
    data: dict[str, Any] = {
        "chain": ["primary", "local", "rules"],
        "backends": {
            "primary": {
                "kind": "openai", "model": "test-model", "base_url": base_url, "timeout_s": 5, "max_in_flight": 8,
                "retry": {"max_attempts": 3, "base_delay_s": 0.005, "max_delay_s": 0.02, "max_retry_after_s": 1.0},
                "circuit": {"failure_threshold": 10_000},  # no breaker trips: outcomes depend on the seed alone
            },
            "local": {"kind": "local"},
            "rules": {"kind": "rules"},
        },
        "pricing": {"test-model": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}},
        "batching": {"max_rows": 32, "max_wait_ms": 50},
        **models,
    }
    return load_config(None, env={}, overrides={"sinks": {"root": str(root)}, "models": data})


def _run(cfg: PipelineConfig, state: Path, workers: int, source: TestingSource, recovery: Path | None = None) -> None:
    flow = build_enrich_flow(cfg, io=EnrichIO(source, InMemorySink(), None), state_dir=state)
    rc = RecoveryConfig(ensure_recovery_dir(recovery)) if recovery is not None else None
    cluster_main(flow, [], 0, worker_count_per_proc=workers, epoch_interval=timedelta(seconds=0.5), recovery_config=rc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _enriched(root: Path) -> pl.DataFrame:
    return pl.read_parquet(str(root / "enriched" / "**" / "*.parquet")).sort("event_id")


@pytest.fixture
def threads_calling_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[int]]:
    """The threads that ran model batches (observed, nothing changed)."""
    seen: set[int] = set()
    process = ModelService.process

    def observed(self: ModelService, frame: pl.DataFrame) -> Any:
        seen.add(threading.get_ident())
        return process(self, frame)

    monkeypatch.setattr(ModelService, "process", observed)
    yield seen


def test_two_workers_give_the_model_results_of_one(tmp_path: Path, threads_calling_models: set[int]) -> None:
    behaviour = dict(latency_s=0.005, failure_rate=0.3, failure_mix={"server_error": 1.0, "rate_limit": 1.0, "malformed": 1.0}, seed=5, retry_after="0.01")
    outs = {}
    threads = {}
    port = _free_port()  # one base URL: it is part of the configuration hash, hence of the idempotency keys that seed failures
    for workers in (1, 2):
        threads_calling_models.clear()
        with OpenAITestServer(Behaviour(**behaviour), port=port) as srv:  # a fresh server: attempts are counted per key
            cfg = _config(tmp_path / f"out{workers}", srv.base_url, cache={"enabled": False})
            _run(cfg, tmp_path / f"state{workers}", workers, TestingSource(_batches()))
        outs[workers] = _enriched(tmp_path / f"out{workers}")
        threads[workers] = set(threads_calling_models)
    one, two = outs[1], outs[2]
    assert one.height == two.height == PARTITIONS * PER_PARTITION
    assert one["event_id"].to_list() == two["event_id"].to_list()
    for c in COMPARED:
        assert one[c].equals(two[c]), c
    tiers = one["model_tier"].value_counts().sort("model_tier").rows()
    assert one["model_retries"].sum() > 0 and len(tiers) >= 2  # failures were injected, retried and fell back
    assert len(threads[1]) == 1 and len(threads[2]) == 2  # the second run did spread over both workers
    print(f"\n{one.height} events, 1 and 2 workers: equal model results; tiers {tiers}; retries {one['model_retries'].sum()}")


def test_budgets_hold_across_two_workers(tmp_path: Path, threads_calling_models: set[int]) -> None:
    limit = 0.02
    with OpenAITestServer(Behaviour(latency_s=0.02)) as srv:
        cfg = _config(tmp_path / "out", srv.base_url, budgets={"default_tenant_daily_usd": limit})
        _run(cfg, tmp_path / "state", 2, TestingSource(_batches(seed=12)))
    out = _enriched(tmp_path / "out")
    assert len(threads_calling_models) == 2
    # one batch's estimate: a batch of requests, each estimated at about what one costs
    batch_estimate = cfg.models.batching.max_rows * out.filter(pl.col("model_tier") == "primary")["model_cost_usd"].max()
    spent = out.group_by("tenant").agg(pl.col("model_cost_usd").sum(), (pl.col("model_tier") == "primary").sum().alias("primary"), pl.len()).sort("tenant", nulls_last=True)
    for tenant, usd, primary, n in spent.rows():
        assert usd <= limit + batch_estimate, (tenant, usd)
        assert 0 < primary < n  # served by the first tier, then refused
    over = max(usd - limit for _, usd, _, _ in spent.rows())
    print(f"\n2 workers, ${limit}/tenant/day: spent {[(t, round(u, 5), p, n) for t, u, p, n in spent.rows()]}; largest overrun ${max(over, 0):.6f} (bound: one batch's estimate ${batch_estimate:.5f})")


def test_ledger_cache_and_budgets_survive_a_rescale(tmp_path: Path) -> None:
    """Stopped half-way with 1 worker, resumed with 2 on the same recovery folder; then the
    whole input replayed on 2 workers against the same ledger."""
    batches = _batches(seed=13)
    half = len(batches) // 2
    state = tmp_path / "recovery"  # the ledger lives in the recovery folder
    with OpenAITestServer(Behaviour(latency_s=0.002)) as srv:
        cfg = _config(tmp_path / "out", srv.base_url, budgets={"default_tenant_daily_usd": 0.5})
        source = TestingSource([*batches[:half], TestingSource.ABORT(), *batches[half:]])
        _run(cfg, state, 1, source, state)  # stops at the abort
        answered_before = {e["key"].split("/")[0] for e in srv.log if e["success"]}
        sent_before = len(srv.log)
        _run(cfg, state, 2, source, state)  # rescaled: resumes from the same folder
        sent_after = len(srv.log) - sent_before
        # a replay of the whole input (a new recovery folder, the same ledger) on 2 workers
        sent_total = len(srv.log)
        replay_cfg = _config(tmp_path / "replay", srv.base_url, budgets={"default_tenant_daily_usd": 0.5})
        _run(replay_cfg, state, 2, TestingSource(batches), tmp_path / "replay-recovery")
        sent_by_replay = len(srv.log) - sent_total
    out = _enriched(tmp_path / "out")
    assert out.height == PARTITIONS * PER_PARTITION and out["event_id"].n_unique() == out.height
    coords = out.select(pl.format("events:{}:{}", "src_partition", "src_offset").alias("event"), "model_tier", "model_cached")
    # no event answered before the rescale was sent again after it
    assert not {e["key"].split("/")[0] for e in srv.log[sent_before:]} & answered_before
    # texts answered before the rescale were not sent again: the durable cache answered them
    later = coords.filter(~pl.col("event").is_in(list(answered_before)))
    cached = later.filter(pl.col("model_cached"))
    assert cached.height > 0
    assert sent_after == later.filter((pl.col("model_tier") == "primary") & ~pl.col("model_cached")).height
    # the budgets kept counting across both runs: no tenant above its limit
    assert out.group_by("tenant").agg(pl.col("model_cost_usd").sum())["model_cost_usd"].max() <= 0.5
    # the replay found every remote result in the ledger, whichever worker owns its partition now
    replay = _enriched(tmp_path / "replay")
    remote = out.filter(pl.col("model_tier") == "primary")["event_id"]
    assert sent_by_replay == 0
    assert replay.filter(pl.col("event_id").is_in(remote.to_list()))["model_replayed"].all()
    cols = [c for c in COMPARED if c != "model_replayed"]
    assert replay.select(cols).equals(out.select(cols))
    print(f"\nrescale 1 -> 2 workers: {cached.height} rows answered by the durable cache, {sent_after} requests after the restart; replay on 2 workers: {replay['model_replayed'].sum()} rows from the ledger, {sent_by_replay} requests")
