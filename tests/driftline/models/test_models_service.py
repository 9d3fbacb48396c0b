"""The fallback chain end to end against the loopback server: privacy, cost, budgets, cache, ledger."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from driftline.clock import FakeClock
from driftline.config import ConfigError, load_config
from driftline.config.models import ModelsConfig
from driftline.models import MODEL_OUTPUT_SCHEMA, ModelBackend, ModelRequest, ModelResult, ModelService, register_backend
from driftline.models import metrics
from driftline.testing.openai_server import Behaviour, OpenAITestServer

PRICES = {
    "big-model": {"input_per_mtok": 2.5, "cached_input_per_mtok": 1.25, "output_per_mtok": 10.0},
    "small-model": {"input_per_mtok": 0.15, "cached_input_per_mtok": 0.075, "output_per_mtok": 0.6},
}
FIXED_USAGE = {"prompt_tokens": 1200, "completion_tokens": 350, "total_tokens": 1550, "prompt_tokens_details": {"cached_tokens": 200}, "completion_tokens_details": {"reasoning_tokens": 100}}
# (1000 * 2.5 + 200 * 1.25 + 350 * 10) / 1e6
BIG_COST = 0.00625


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(Behaviour()) as srv:
        yield srv


def config(srv: OpenAITestServer, tmp_path: Path, **over: Any) -> ModelsConfig:
    fast = {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02}
    data: dict[str, Any] = {
        "chain": ["primary", "local", "rules"],
        "backends": {
            "primary": {"kind": "openai", "model": "big-model", "base_url": srv.base_url, "timeout_s": 0.5, "retry": fast},
            "secondary": {"kind": "openai", "model": "small-model", "base_url": srv.base_url, "timeout_s": 0.5, "retry": fast},
            "local": {"kind": "local"},
            "rules": {"kind": "rules"},
        },
        "pricing": PRICES,
        "ledger": {"path": str(tmp_path / "ledger.sqlite")},
    }
    data.update(over)
    return ModelsConfig.model_validate(data)


def frame(texts: Sequence[str], *, start: int = 0, tenant: str = "acme", source: str = "tickets", **cols: Sequence[Any]) -> pl.DataFrame:
    n = len(texts)
    base = {
        "event_id": [f"e{start + i}" for i in range(n)],
        "model_input": list(texts),
        "tenant": [tenant] * n,
        "source": [source] * n,
        "route_local": [False] * n,
        "classification": ["internal"] * n,
        "src_topic": ["events"] * n,
        "src_partition": [0] * n,
        "src_offset": list(range(start, start + n)),
    }
    base.update({k: list(v) for k, v in cols.items()})
    return pl.DataFrame(base)


def event_of(idempotency_key: str) -> str:
    """The event part (source coordinates) of a request's idempotency key."""
    return idempotency_key.split("/")[0]


def test_output_schema_and_order(server: OpenAITestServer, tmp_path: Path) -> None:
    svc = ModelService(config(server, tmp_path))
    texts = [f"great thanks {i}" if i % 3 else f"awful {i}" for i in range(50)]
    out = svc.process(frame(texts)).results
    assert out["event_id"].to_list() == [f"e{i}" for i in range(50)]
    assert {c: out.schema[c] for c in MODEL_OUTPUT_SCHEMA} == MODEL_OUTPUT_SCHEMA
    assert out["model_label"].to_list() == ["negative" if i % 3 == 0 else "positive" for i in range(50)]
    assert set(out["model_tier"]) == {"primary"}
    svc.close()


def test_private_rows_never_reach_the_remote_backend(server: OpenAITestServer, tmp_path: Path) -> None:
    svc = ModelService(config(server, tmp_path))
    df = frame([f"a great day {i}" for i in range(4)], route_local=[True, False, False, False], classification=["internal", "restricted", "public", None])
    out = svc.process(df).results
    assert out["model_tier"].to_list() == ["local", "local", "primary", "primary"]
    assert out["model_fallback_reasons"].to_list()[:2] == [["primary:privacy"], ["primary:privacy"]]
    assert out["model_error_class"].to_list()[:2] == [None, None]
    assert sorted(event_of(e["key"]) for e in server.log) == ["events:0:2", "events:0:3"]
    svc.close()


def test_cost_per_event_is_tokens_times_prices_to_the_cent(server: OpenAITestServer, tmp_path: Path) -> None:
    server.update(usage=FIXED_USAGE)
    svc = ModelService(config(server, tmp_path))
    out = svc.process(frame([f"fine {i}" for i in range(40)])).results  # distinct: identical texts would be sent once
    assert out["model_cost_usd"].to_list() == [pytest.approx(BIG_COST, abs=1e-12)] * 40
    assert round(out["model_cost_usd"].sum(), 2) == round(40 * BIG_COST, 2) == 0.25
    row = out.row(0, named=True)
    assert (row["model_input_tokens"], row["model_output_tokens"], row["model_cached_tokens"], row["model_reasoning_tokens"]) == (1200, 350, 200, 100)
    assert row["model_cost_estimated"] is False
    # the provider's own usage figures agree with what we billed
    billed = sum((e["usage"]["prompt_tokens"] - 200) * 2.5 + 200 * 1.25 + e["usage"]["completion_tokens"] * 10 for e in server.log) / 1e6
    assert billed == pytest.approx(out["model_cost_usd"].sum(), abs=1e-9)
    svc.close()


def test_cost_from_estimate_is_marked(server: OpenAITestServer, tmp_path: Path) -> None:
    server.update(usage={"prompt_tokens": "?"})
    svc = ModelService(config(server, tmp_path))
    row = svc.process(frame(["x" * 400])).results.row(0, named=True)
    assert row["model_tokens_estimated"] and row["model_cost_estimated"] and row["model_cost_usd"] > 0
    svc.close()


def test_failures_fall_through_the_chain_with_reasons(server: OpenAITestServer, tmp_path: Path) -> None:
    server.update(failure_rate=1.0, failure_mix={"server_error": 1.0})
    svc = ModelService(config(server, tmp_path, chain=["primary", "secondary", "local"]))
    out = svc.process(frame(["great"], classification=["public"])).results.row(0, named=True)
    assert out["model_tier"] == "local" and out["model_tier_index"] == 2
    assert out["model_fallback_reasons"] == ["primary:server_error", "secondary:server_error"]
    assert out["model_error_class"] == "server_error" and out["model_retries"] == 2
    assert len(server.log) == 4
    svc.close()


def test_a_fallback_tier_latency_is_its_own(server: OpenAITestServer, tmp_path: Path) -> None:
    """The local tier's latency histogram holds the local call's time, not the time the
    rows spent failing on the remote tier before it."""
    server.update(latency_s=0.3, failure_rate=1.0, failure_mix={"server_error": 1.0})
    svc = ModelService(config(server, tmp_path, chain=["primary", "local"], backends={**config(server, tmp_path).backends, "primary": {"kind": "openai", "model": "big-model", "base_url": server.base_url, "retry": {"max_attempts": 1}}}))
    local = metrics.LATENCY.labels(backend="local", model="vader", tier="local")
    before = local._sum.get()
    out = svc.process(frame(["great", "fine"], classification=["public"] * 2)).results
    assert out["model_tier"].to_list() == ["local", "local"]
    assert out["model_latency_ms"].min() >= 300  # the row's latency sums every tier it tried
    assert local._sum.get() - before < 0.25  # the tier's own observation does not
    svc.close()


def test_an_event_is_never_dropped(server: OpenAITestServer, tmp_path: Path) -> None:
    @register_backend("test_exploding")
    class Exploding(ModelBackend):
        def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
            raise RuntimeError("boom")

    cfg = config(server, tmp_path, chain=["boom"], backends={"boom": {"kind": "test_exploding"}}, task="topic", tasks={"topic": {"kind": "classification", "categories": ["billing", "other"]}})
    svc = ModelService(cfg)
    out = svc.process(frame(["my billing", "hello"])).results
    assert out["model_tier"].to_list() == ["rules", "rules"]  # appended automatically
    assert out["model_label"].to_list() == ["billing", "other"]
    assert out["model_error_class"].to_list() == ["internal", "internal"]
    svc.close()


def test_budget_exhaustion_switches_tiers_at_the_configured_point(server: OpenAITestServer, tmp_path: Path) -> None:
    server.update(usage=FIXED_USAGE)
    probe = ModelService(config(server, tmp_path / "probe"))
    est = probe.estimate_cost("primary", "sentiment", "fine 00")
    probe.close()
    limit = 10 * BIG_COST + est - 1e-9  # events 0..9 fit (spent + estimate <= limit), event 10 does not
    cfg = config(server, tmp_path, budgets={"per_tenant_daily_usd": {"acme": limit}})
    svc = ModelService(cfg, FakeClock())
    tiers, events = [], []
    for i in range(14):
        got = svc.process(frame([f"fine {i:02d}"], start=i))  # distinct texts: no cache hits
        tiers.append(got.results["model_tier"][0])
        events.append(got.budget_events)
        if i >= 10:
            assert got.results["model_budget_event"][0] == "tenant_daily_budget_exhausted"
            assert got.results["model_fallback_reasons"][0].to_list() == ["primary:budget"]
    assert tiers == ["primary"] * 10 + ["local"] * 4
    ev = pl.concat(events)
    assert ev.height == 1 and ev.row(0, named=True)["scope"] == "tenant" and ev.row(0, named=True)["key"] == "acme"
    assert ev["spent_usd"][0] == pytest.approx(10 * BIG_COST)
    # other tenants are not affected; a new day resets the budget
    assert svc.process(frame(["fine 98"], start=100, tenant="globex")).results["model_tier"][0] == "primary"
    svc.clock.advance(86400)  # type: ignore[attr-defined]
    assert svc.process(frame(["fine 99"], start=200)).results["model_tier"][0] == "primary"
    svc.close()


def test_budget_next_tier_tries_a_cheaper_model_and_local_mode_skips_it(server: OpenAITestServer, tmp_path: Path) -> None:
    chain = ["primary", "secondary", "local"]
    budgets = {"per_source_daily_usd": {"tickets": 0.0005}}  # below one big-model call, above a small one
    svc = ModelService(config(server, tmp_path / "a", chain=chain, budgets=budgets))
    row = svc.process(frame(["fine"])).results.row(0, named=True)
    assert row["model_tier"] == "secondary" and row["model_fallback_reasons"] == ["primary:budget"]
    assert row["model_budget_event"] == "source_daily_budget_exhausted"
    svc.close()
    svc = ModelService(config(server, tmp_path / "b", chain=chain, budgets={**budgets, "on_exhausted": "local"}))
    row = svc.process(frame(["fine"])).results.row(0, named=True)
    assert row["model_tier"] == "local" and row["model_fallback_reasons"] == ["primary:budget", "secondary:budget"]
    svc.close()


def test_budget_within_one_batch_never_overspends(server: OpenAITestServer, tmp_path: Path) -> None:
    # The server's default usage is the real prompt size and a short answer (~10 tokens, far
    # below max_output_tokens).  Reservations are replaced by the actual costs as the answers
    # arrive, so the batch itself goes on to use what is left, and never overspends.
    limit = 0.005  # about 22 of the 30 calls
    svc = ModelService(config(server, tmp_path, budgets={"default_tenant_daily_usd": limit}))
    texts = [f"fine {i:02d}" for i in range(30)]
    out = svc.process(frame(texts)).results
    tiers = out["model_tier"].to_list()
    n_primary = tiers.count("primary")
    spent = out["model_cost_usd"].sum()
    assert 0 < n_primary < 30 and spent <= limit
    assert svc.ledger is not None and svc.ledger.spend(svc.budgets.day())[("tenant", "acme")] == pytest.approx(spent)
    # the first refused row did not fit in what was left: the tenant was served until then
    first_refused = tiers.index("local")
    assert tiers[:first_refused] == ["primary"] * first_refused
    assert limit - spent < svc.estimate_cost("primary", "sentiment", texts[first_refused])
    later = svc.process(frame([f"later {i:02d}" for i in range(30)], start=100)).results
    assert spent + later["model_cost_usd"].sum() <= limit
    svc.close()


def test_cache_hit_records_cost_avoided(server: OpenAITestServer, tmp_path: Path) -> None:
    server.update(usage=FIXED_USAGE)
    svc = ModelService(config(server, tmp_path))
    first = svc.process(frame(["the same words"], start=0)).results.row(0, named=True)
    second = svc.process(frame(["the same words"], start=1)).results.row(0, named=True)
    assert first["model_cached"] is False and first["model_cost_usd"] == pytest.approx(BIG_COST)
    assert second["model_cached"] is True and second["model_cost_usd"] == 0.0
    assert second["model_cost_saved_usd"] == pytest.approx(BIG_COST) and second["model_label"] == first["model_label"]
    assert len(server.log) == 1
    svc.close()


def test_replayed_event_is_not_sent_again_and_adds_no_spend(server: OpenAITestServer, tmp_path: Path) -> None:
    server.update(usage=FIXED_USAGE)
    cfg = config(server, tmp_path, cache={"enabled": False}, budgets={"default_tenant_daily_usd": 100.0})
    svc = ModelService(cfg)
    df = frame([f"text {i}" for i in range(20)])
    first = svc.process(df).results
    day = svc.budgets.day()
    spend_before = svc.ledger.spend(day)  # type: ignore[union-attr]
    svc.close()
    cost_metric = metrics.COST.labels(backend="openai", model="big-model", tier="primary")
    cost_before = cost_metric._value.get()
    # a restart replays the same coordinates
    svc2 = ModelService(cfg)
    again = svc2.process(df).results
    assert len(server.log) == 20  # no new request
    assert again["model_replayed"].all() and not first["model_replayed"].any()
    cols = [c for c in MODEL_OUTPUT_SCHEMA if c != "model_replayed"]
    assert again.select(cols).equals(first.select(cols))
    assert svc2.ledger.spend(day) == spend_before  # type: ignore[union-attr]
    assert svc2.budgets.spent[(day, "tenant", "acme")] == pytest.approx(20 * BIG_COST)  # resumed from the ledger
    assert cost_metric._value.get() == cost_before
    # a different model configuration is a different ledger key: it calls again
    cfg3 = config(server, tmp_path, cache={"enabled": False}, backends={**cfg.model_dump()["backends"], "primary": {**cfg.model_dump()["backends"]["primary"], "model": "small-model"}})
    svc3 = ModelService(cfg3)
    assert not svc3.process(df.head(2)).results["model_replayed"].any()
    assert len(server.log) == 22
    svc2.close()
    svc3.close()


def test_ledger_is_pruned_past_its_retention(server: OpenAITestServer, tmp_path: Path) -> None:
    clock = FakeClock()
    svc = ModelService(config(server, tmp_path, ledger={"path": str(tmp_path / "l.sqlite"), "retention_s": 60, "prune_every": 1}), clock)
    svc.process(frame(["a"], start=0))
    clock.advance(61)
    svc.process(frame(["b"], start=1))
    assert svc.ledger is not None and len(svc.ledger) == 1
    svc.close()


def test_local_only_chain_needs_no_ledger(tmp_path: Path) -> None:
    svc = ModelService(ModelsConfig.model_validate({"ledger": {"path": str(tmp_path / "l.sqlite")}}))
    out = svc.process(pl.DataFrame({"text": ["good"], "src_topic": ["t"], "src_partition": [0], "src_offset": [1]})).results
    assert out["model_tier"][0] == "local" and svc.ledger is None
    assert not (tmp_path / "l.sqlite").exists()
    svc.close()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"chain": ["primry"]}, "chain[0]: unknown backend 'primry'"),
        ({"task": "nope"}, "task: unknown task 'nope'"),
        ({"backends": {"x": {"kind": "openai", "model": "m"}}, "chain": ["x"]}, "backends.x.base_url"),
        ({"tasks": {"t": {"kind": "classification"}}}, "needs `categories`"),
        ({"tasks": {"t": {"kind": "extraction", "json_schema": {"type": "nonsense"}}}}, "not a valid JSON schema"),
        ({"batching": {"max_rows": 0}}, "models.batching.max_rows"),
        ({"cache": {"ttl": 5}}, "models.cache.ttl"),
    ],
)
def test_config_errors_name_the_bad_key(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={}, overrides={"models": overrides})
    assert needle in str(err.value)


def test_unknown_backend_kind_fails_at_start_up(tmp_path: Path) -> None:
    cfg = ModelsConfig.model_validate({"backends": {"x": {"kind": "nope"}}, "chain": ["x"], "ledger": {"enabled": False}})
    with pytest.raises(ValueError, match=r"models.backends.x.kind: unknown backend kind 'nope'"):
        ModelService(cfg)


def _counter(metric: Any) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total") or s.name.endswith("_count"))


@pytest.mark.parametrize("n", [1, 20, 33, 200])
def test_local_whole_batch_equals_row_path(n: int) -> None:
    """A chain whose local tier answers every row takes the column path: the same result
    columns (all but the wall-clock latency) and metrics as the per-row path."""
    cfg = ModelsConfig.model_validate({"ledger": {"enabled": False}, "tasks": {"sentiment": {"kind": "sentiment"}, "mood": {"kind": "sentiment"}}, "task_by_source": {"chat": "mood"}})
    columns = ModelService(cfg)
    rows = ModelService(cfg)
    assert columns._whole is not None
    rows._whole = None  # the per-row path
    pool = ["great service, thanks!", "awful", "", None, "meh", "I LOVE it 😀", "not bad, but slow!!", "great service, thanks!"]
    texts = [pool[i % len(pool)] for i in range(n)]
    f = frame([t or "" for t in texts], source="chat").with_columns(
        pl.Series("model_input", texts, dtype=pl.Utf8),
        pl.Series("source", [("chat" if i % 2 else "tickets") for i in range(n)]),
        pl.lit("stale").alias("model_label"),  # a column of a previous run is replaced
    )
    calls = metrics.CALLS.labels(backend="local", model="vader", tier="local", outcome="success")
    before = _counter(calls)
    got = columns.process(f).results
    mid = _counter(calls)
    want = rows.process(f).results
    assert mid - before == _counter(calls) - mid == n
    assert got.columns == want.columns and got.schema == want.schema
    assert got.drop("model_latency_ms").equals(want.drop("model_latency_ms"))
    assert got["model_task"].to_list() == [("mood" if i % 2 else "sentiment") for i in range(n)]


def test_whole_batch_path_only_when_the_first_tier_answers_everything(server: OpenAITestServer, tmp_path: Path) -> None:
    assert ModelService(config(server, tmp_path))._whole is None  # remote first tier
    assert ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}, "tasks": {"sentiment": {"kind": "sentiment"}, "summary": {"kind": "summarization"}}}))._whole is None
    assert ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}, "chain": ["rules"]}))._whole is None
    assert ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}}))._whole is not None


def test_whole_batch_path_failing_falls_back_to_the_row_path(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = ModelService(ModelsConfig.model_validate({"ledger": {"enabled": False}}))

    def boom(texts: pl.Series) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(svc.tiers[0].backend, "answer_columns", boom)
    out = svc.process(pl.DataFrame({"text": ["great service, thanks!", "awful"]})).results
    assert out.select("model_label", "model_tier").rows() == [("positive", "local"), ("negative", "local")]


def test_local_answers_are_memoised_by_score_and_sign_of_zero() -> None:
    from driftline.config.models import BackendConfig
    from driftline.models.local import VaderBackend

    b = VaderBackend("local", BackendConfig(kind="local"), {})
    first = [b._answer(c) for c in (0.0, -0.0, 0.5, -0.9)]
    assert [b._answer(c) for c in (0.0, -0.0, 0.5, -0.9)] == first  # from the memo
    assert '"compound":0.0' in first[0][1] and '"compound":-0.0' in first[1][1]
