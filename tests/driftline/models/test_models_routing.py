"""Routing strategies (issue 19.2) against three loopback providers of different prices,
latencies and failure rates: each strategy's choices follow its rule on a scripted
scenario (per-tier shares printed), the route and its reason are on every row and in
the metrics, and an outage of the cheapest tier moves ``cost`` routing to the next
cheapest within one breaker window."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import polars as pl
import pytest
from prometheus_client import REGISTRY

from driftline.config.models import ModelsConfig
from driftline.models import ModelService
from driftline.models.routing import STRATEGIES, RoutingStrategy, register_strategy
from driftline.testing.openai_server import Behaviour, OpenAITestServer

# name -> (model, price in+out per Mtok, latency s, failure rate)
TIERS = {
    "cheap": ("cheap-m", (0.10, 0.40), 0.120, 0.0),
    "mid": ("mid-m", (1.00, 4.00), 0.005, 0.0),
    "pricey": ("big-m", (5.00, 15.00), 0.060, 0.45),
}


@contextmanager
def _servers() -> Iterator[dict[str, OpenAITestServer]]:
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(OpenAITestServer(Behaviour(latency_s=lat, failure_rate=fail, failure_mix={"server_error": 1.0}, seed=i)))
            for i, (name, (_, _, lat, fail)) in enumerate(TIERS.items())
        }


def _service(servers: dict[str, OpenAITestServer], strategy: str, chain: list[str], cooldown_s: float = 3.0, **routing: Any) -> ModelService:
    backends: dict[str, Any] = {
        name: {
            "kind": "openai", "model": model, "base_url": servers[name].base_url, "max_in_flight": 8,
            "retry": {"max_attempts": 1}, "circuit": {"failure_threshold": 4, "cooldown_s": cooldown_s},
        }
        for name, (model, _, _, _) in TIERS.items()
    }
    backends["rules"] = {"kind": "rules"}
    return ModelService(
        ModelsConfig.model_validate(
            {
                "chain": [*chain, "rules"],
                "backends": backends,
                "pricing": {model: {"input_per_mtok": p[0], "output_per_mtok": p[1]} for model, p, _, _ in TIERS.values()},
                "ledger": {"enabled": False},
                "cache": {"enabled": False},
                "routing": {"strategy": strategy, "min_samples": 8, **routing},
            }
        )
    )


def _batch(n: int, start: int) -> pl.DataFrame:
    return pl.DataFrame({"text": [f"great help, ticket {i}" for i in range(start, start + n)], "event_id": [f"e{i}" for i in range(start, start + n)]})


def _run(svc: ModelService, batches: int, size: int = 24, start: int = 0) -> pl.DataFrame:
    return pl.concat([svc.process(_batch(size, start + b * size)).results for b in range(batches)])


def _shares(out: pl.DataFrame, column: str = "model_tier") -> dict[str, float]:
    counts = Counter(out[column].to_list())
    return {k: round(v / out.height, 3) for k, v in sorted(counts.items())}


def _first_tier(out: pl.DataFrame) -> list[str]:
    """The first tier each row tried: the first fallback reason's tier, else the tier that answered."""
    return [r[0].split(":")[0] if r else t for r, t in zip(out["model_fallback_reasons"].to_list(), out["model_tier"].to_list())]


def test_each_strategy_follows_its_rule() -> None:
    with _servers() as servers:
        chain = ["pricey", "cheap", "mid"]  # the configured order is neither by price nor by latency
        report = {}
        # a breaker that opened stays open for the rest of a scenario: a cool-down ending between the
        # test's look at a tier's health and the router's (a slow batch on a loaded machine) cannot race
        cooldown = 600.0

        svc = _service(servers, "chain", chain, cooldown)
        out = _run(svc, 4)
        assert set(_first_tier(out)) == {"pricey"} and set(out["model_route_reason"]) == {"chain"}
        report["chain"] = _shares(out)
        svc.close()

        svc = _service(servers, "cost", chain, cooldown)
        out = _run(svc, 4)
        assert set(_first_tier(out)) == {"cheap"} and set(out["model_route_reason"]) == {"cheapest"}
        assert set(out["model_route"]) == {"cheap-m"}
        report["cost"] = _shares(out)
        svc.close()

        svc = _service(servers, "latency", chain, cooldown, latency_percentile=90)
        explored = []
        for b in range(6):  # while a healthy tier has too few observations, the first such tier (chain order) leads
            strategy = svc.router.strategy
            cold = [t.name for t in svc.tiers[:-1] if strategy.healthy(t) and t.health is not None and t.health.latency(90)[1] < 8]
            if not cold:
                break
            got = svc.process(_batch(24, b * 24)).results
            assert set(got["model_route_reason"]) == {"exploring"} and set(_first_tier(got)) == {cold[0]}, (cold, _first_tier(got))
            explored.append(cold[0])
        assert explored[0] == "pricey" and "mid" in explored
        out = _run(svc, 4, start=1000)
        p90 = {t.name: round(t.health.latency(90)[0], 1) for t in svc.tiers if t.health is not None and t.backend.remote}
        assert set(_first_tier(out)) == {"mid"} and set(out["model_route_reason"]) == {"fastest"}, p90
        report["latency"] = _shares(out)
        svc.close()

        svc = _service(servers, "health", chain, cooldown, error_rate_threshold=0.3)
        pricey = next(t for t in svc.tiers if t.name == "pricey")
        for b in range(8):  # pricey, first in the chain, fails ~45 % of its requests
            unhealthy = not svc.router.strategy.healthy(pricey)
            got = svc.process(_batch(24, b * 24)).results
            if unhealthy:  # breaker open, or error rate above 0.3 over >= 8 outcomes: left out
                rate, n = pricey.health.error_rate()  # type: ignore[union-attr]
                assert pricey.backend.breaker.state.name == "OPEN" or (n >= 8 and rate > 0.3)  # type: ignore[union-attr]
                assert set(_first_tier(got)) == {"cheap"} and set(got["model_route_reason"]) == {"skip_unhealthy"}
                break
            assert set(_first_tier(got)) == {"pricey"} and set(got["model_route_reason"]) == {"healthy"}
        else:
            raise AssertionError("a tier failing 45 % of its requests never became unhealthy")
        out = _run(svc, 4, start=1000)
        assert set(_first_tier(out)) == {"cheap"} and set(out["model_route_reason"]) == {"skip_unhealthy"}
        report["health"] = _shares(out)
        svc.close()

        # routes are counted per first tier and reason (bounded labels)
        assert REGISTRY.get_sample_value("driftline_model_routes_total", {"tier": "mid", "reason": "fastest"}) >= 96
        print("\nper-tier shares of answers after warm-up, chain [pricey, cheap, mid]:")
        for strategy, shares in report.items():
            print(f"  {strategy:<8} {shares}")
        print(f"  latency p90 (ms) after warm-up: {p90}")


def test_cost_routing_leaves_the_cheapest_within_one_breaker_window_of_its_outage() -> None:
    with _servers() as servers:
        svc = _service(servers, "cost", ["pricey", "mid", "cheap"])
        before = _run(svc, 2)
        assert set(before["model_tier"]) == {"cheap"}
        servers["cheap"].update(failure_rate=1.0)  # outage: every request fails
        outage = time.time()
        cooldown = 3.0
        moved_at = None
        out = []
        for b in range(12):
            got = svc.process(_batch(24, 5000 + b * 24)).results
            out.append(got)
            if moved_at is None and set(got["model_route_reason"]) == {"cheapest_healthy"}:
                moved_at = time.time()
                assert set(_first_tier(got)) == {"mid"} and set(got["model_tier"]) == {"mid"}
        svc.close()
        sent_to_cheap = [e for e in servers["cheap"].log if e["t"] >= outage]
    assert moved_at is not None and moved_at - outage < cooldown, "cost routing did not leave the failed tier within one breaker window"
    after = pl.concat(out)
    # the batch in flight at the outage fell back to the next cheapest; nothing was lost
    assert after["model_tier"].null_count() == 0 and set(after["model_tier"]) <= {"mid", "pricey"}
    # the breaker cut the failed tier off after its threshold (plus the requests in flight)
    assert len(sent_to_cheap) <= 4 + 8
    print(
        f"\noutage of 'cheap': cost routing moved to 'mid' after {moved_at - outage:.2f}s (breaker cool-down {cooldown}s); "
        f"requests the failed tier still received: {len(sent_to_cheap)}; shares after the outage {_shares(after)}"
    )


def test_a_strategy_is_one_registered_class() -> None:
    @register_strategy("test_remote_last")
    class RemoteLast(RoutingStrategy):
        def route(self, task, tiers):  # type: ignore[no-untyped-def]
            return sorted(tiers, key=lambda t: t.backend.remote), "remote_last"

    try:
        svc = ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}, "routing": {"strategy": "test_remote_last"}}))
        out = svc.process(pl.DataFrame({"text": ["good"]})).results
        assert out.select("model_tier", "model_route_reason").row(0) == ("local", "remote_last")
        with pytest.raises(ValueError, match="unknown strategy 'nope'"):
            ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}, "routing": {"strategy": "nope"}}))
    finally:
        STRATEGIES.pop("test_remote_last")
