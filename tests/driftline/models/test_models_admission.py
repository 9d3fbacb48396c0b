"""Admission against the loopback server: budgets that reserve a learned estimate and trip
near the limit (issue 21.2), identical texts sent once (21.3), budgets and the response
cache shared through the ledger by several services (processes) and across restarts."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from driftline.config.models import ModelsConfig
from driftline.models import ModelService
from driftline.testing.openai_server import Behaviour, OpenAITestServer

PRICES = {"big-model": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(Behaviour()) as srv:
        yield srv


def config(srv: OpenAITestServer, tmp_path: Path, **over: Any) -> ModelsConfig:
    data: dict[str, Any] = {
        "chain": ["primary", "local", "rules"],
        "backends": {
            "primary": {"kind": "openai", "model": "big-model", "base_url": srv.base_url, "timeout_s": 5, "max_output_tokens": 256},
            "local": {"kind": "local"},
            "rules": {"kind": "rules"},
        },
        "pricing": PRICES,
        "ledger": {"path": str(tmp_path / "ledger.sqlite")},
    }
    data.update(over)
    return ModelsConfig.model_validate(data)


def frame(texts: Sequence[str], *, start: int = 0, tenant: str = "acme", partition: int = 0) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame(
        {
            "event_id": [f"e{partition}-{start + i}" for i in range(n)],
            "model_input": list(texts),
            "tenant": [tenant] * n,
            "source": ["tickets"] * n,
            "src_topic": ["events"] * n,
            "src_partition": [partition] * n,
            "src_offset": list(range(start, start + n)),
        }
    )


def texts(n: int, seed: int, prefix: str = "order") -> list[str]:
    rng = random.Random(seed)
    words = "great thanks slow broken refund parcel late helpful app crash fine love".split()
    return [f"{prefix} {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for i in range(n)]


def test_budget_serves_the_first_tier_until_the_limit_is_within_one_request(server: OpenAITestServer, tmp_path: Path) -> None:
    """Answers are ~10 tokens, max_output_tokens 256: the old reservation (prompt + 256)
    refused this tenant at a settled spend of $0; the learned estimate serves it until its
    settled spend is within one request's cost of the limit."""
    limit = 0.02
    svc = ModelService(config(server, tmp_path, budgets={"per_tenant_daily_usd": {"acme": limit}}))
    cold = svc.estimate_cost("primary", "sentiment", texts(1, 0)[0])
    outs, events = [], []
    for b in range(4):
        got = svc.process(frame(texts(64, seed=b, prefix=f"batch {b}"), start=64 * b))
        outs.append(got.results)
        events.append(got.budget_events)
    out = pl.concat(outs)
    ev = pl.concat(events)
    tiers = out["model_tier"].to_list()
    primary = out.filter(pl.col("model_tier") == "primary")
    spent = primary["model_cost_usd"].sum()
    one_request = primary["model_cost_usd"].max()
    first_refused = next(i for i, r in enumerate(out["model_fallback_reasons"].to_list()) if r == ["primary:budget"])
    # served by the first tier until the first refusal ...
    assert tiers[:first_refused] == ["primary"] * first_refused
    # ... which came when the settled spend was within one request's cost of the limit
    assert ev.height == 1
    e = ev.row(0, named=True)
    assert (e["scope"], e["key"], e["cause"], e["reserved_usd"]) == ("tenant", "acme", "settled", 0.0)
    assert limit - e["spent_usd"] < e["request_usd"] <= 1.1 * one_request  # the estimate learned the real cost
    # (every row before the refused one had been answered and settled by then)
    assert out.head(first_refused)["model_cost_usd"].sum() - 1e-12 <= e["spent_usd"] <= spent + 1e-12
    # never above the limit by more than one batch's estimate (here: not above it at all)
    assert spent <= limit + 64 * e["request_usd"]
    assert spent <= limit
    assert svc.ledger is not None and svc.ledger.spend(svc.budgets.day())[("tenant", "acme")] == pytest.approx(spent)
    # and every row after the limit was reached went to the next tier, flagged
    refused = out.filter(pl.col("model_tier") != "primary")
    assert refused.height == 256 - primary.height > 0
    assert set(refused["model_budget_event"]) == {"tenant_daily_budget_exhausted"}
    old_way = int(limit // cold)  # what a reservation of prompt + max_output_tokens let through at once
    print(
        f"\nbudget ${limit}: {primary.height} of 256 events served by primary, first refusal at settled ${e['spent_usd']:.5f} "
        f"(estimate ${e['request_usd']:.6f}, one request ${one_request:.6f}); a max_output_tokens reservation (${cold:.5f}) "
        f"admits {old_way} requests of a batch at a time"
    )
    svc.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_reservations_of_another_process_count_and_the_event_says_so(server: OpenAITestServer, tmp_path: Path, journal_mode: str) -> None:
    """Two services on one ledger file are two processes (of one host with WAL, of several
    sharing a network file system without): the requests one has in flight are reserved
    for the other too, and a refusal they cause says ``reserved``."""
    ledger = {"path": str(tmp_path / "ledger.sqlite"), "journal_mode": journal_mode}
    cfg = config(server, tmp_path, budgets={"per_tenant_daily_usd": {"acme": 0.03}}, cache={"enabled": False}, ledger=ledger)
    a, b = ModelService(cfg), ModelService(cfg)
    est = a.estimate_cost("primary", "sentiment", "text 00")  # cold: prompt + max_output_tokens
    n = int(0.03 // est)  # what fits at once
    server.update(hold=True)
    got: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: got.update(a=a.process(frame([f"text {i:02d}" for i in range(n)]))))
    worker.start()
    deadline = time.monotonic() + 10
    while sum(1 for e in server.log) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.ledger is not None and a.ledger.reservations(a.budgets.day())[("tenant", "acme")] == pytest.approx(n * est, rel=0.05)
    refused = b.process(frame(["text 99"], start=500, partition=1))
    row = refused.results.row(0, named=True)
    assert row["model_tier"] == "local" and row["model_budget_event"] == "tenant_daily_budget_exhausted"
    e = refused.budget_events.row(0, named=True)
    assert e["cause"] == "reserved" and e["spent_usd"] == 0.0 and e["reserved_usd"] == pytest.approx(n * est, rel=0.05)
    server.update(hold=False)
    worker.join(10)
    assert got["a"].results["model_tier"].to_list() == ["primary"] * n
    # settled far below the estimates: the other process now fits
    assert b.process(frame(["text 98"], start=501, partition=1)).results["model_tier"][0] == "primary"
    assert a.ledger.reservations(a.budgets.day()) == {}
    a.close()
    b.close()


def test_repeated_texts_are_sent_once_and_count_as_cache_hits(server: OpenAITestServer, tmp_path: Path) -> None:
    """30% of each batch repeats a text of the same batch: requests = distinct texts, and
    cost_saved is exactly the cost the repeats avoided."""
    svc = ModelService(config(server, tmp_path))
    rng = random.Random(5)
    outs = []
    distinct = 0
    for b in range(3):
        unique = texts(70, seed=10 + b, prefix=f"b{b}")
        batch = unique + [rng.choice(unique) for _ in range(30)]
        rng.shuffle(batch)
        distinct += len(set(batch))
        outs.append(svc.process(frame(batch, start=100 * b)).results)
    out = pl.concat(outs)
    assert len(server.log) == distinct == 210
    leaders = out.filter(~pl.col("model_cached"))
    repeats = out.filter(pl.col("model_cached"))
    assert repeats.height == 90 and leaders.height == 210
    cost_of = dict(zip(leaders["model_input"], leaders["model_cost_usd"]))
    avoided = sum(cost_of[t] for t in repeats["model_input"])
    assert repeats["model_cost_usd"].sum() == 0.0
    assert repeats["model_cost_saved_usd"].sum() == pytest.approx(avoided, abs=1e-12) and avoided > 0
    assert dict(zip(repeats["model_input"], repeats["model_label"])) == {t: l for t, l in zip(leaders["model_input"], leaders["model_label"]) if t in set(repeats["model_input"])}
    # every event billed what the provider billed: the leaders' costs add up to the server's usage
    billed = sum(e["usage"]["prompt_tokens"] * 2.5 + e["usage"]["completion_tokens"] * 10.0 for e in server.log) / 1e6
    assert out["model_cost_usd"].sum() == pytest.approx(billed, abs=1e-9)
    print(f"\n300 events, 210 distinct texts: {len(server.log)} requests, ${avoided:.6f} saved by {repeats.height} repeats")
    svc.close()


def test_identical_texts_in_batches_in_flight_at_once_are_sent_once(server: OpenAITestServer, tmp_path: Path) -> None:
    """Two workers' batches share 40 texts and run at the same time: each text is sent once;
    the batch that did not send it waits for the answer and records it as a cache hit."""
    server.update(latency_s=0.2)
    svc = ModelService(config(server, tmp_path))
    shared = texts(40, seed=3, prefix="shared")
    results: dict[int, pl.DataFrame] = {}

    def run(p: int) -> None:
        results[p] = svc.process(frame(shared + texts(10, seed=20 + p, prefix=f"own{p}"), partition=p)).results

    threads = [threading.Thread(target=run, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    both = pl.concat([results[0], results[1]])
    assert len(server.log) == 40 + 20
    assert len({e["key"] for e in server.log}) == 60
    assert both.filter(pl.col("model_cached")).height == 40
    assert both["model_cost_saved_usd"].sum() == pytest.approx(both.filter(pl.col("model_input").is_in(shared))["model_cost_usd"].sum())
    assert (both["model_tier"] == "primary").all()
    svc.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_cache_and_spend_survive_a_restart(server: OpenAITestServer, tmp_path: Path, journal_mode: str) -> None:
    cfg = config(server, tmp_path, budgets={"per_tenant_daily_usd": {"acme": 1.0}}, ledger={"path": str(tmp_path / "ledger.sqlite"), "journal_mode": journal_mode})
    first = ModelService(cfg)
    before = first.process(frame(["the same words"])).results.row(0, named=True)
    first.close()
    again = ModelService(cfg)  # a new process on the same ledger: memory is empty
    after = again.process(frame(["the same words"], start=1)).results.row(0, named=True)
    assert len(server.log) == 1
    assert after["model_cached"] and after["model_cost_saved_usd"] == pytest.approx(before["model_cost_usd"]) and after["model_label"] == before["model_label"]
    assert again.budgets.spent[(again.budgets.day(), "tenant", "acme")] == pytest.approx(before["model_cost_usd"])
    again.close()
