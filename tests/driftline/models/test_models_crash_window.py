"""The crash window of remote calls: an answer is in the ledger before the rest of its
batch comes back, and the test server does not count answers nobody received."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import httpx
import polars as pl

from driftline.config.models import BackendConfig, ModelsConfig
from driftline.models import CallLedger, ModelBackend, ModelRequest, ModelResult, ModelService
from driftline.models.openai_compat import OpenAIBackend
from driftline.models.prompts import TaskSpec
from driftline.testing.openai_server import Behaviour, OpenAITestServer


class _Stepper(ModelBackend):
    """A remote backend that answers one request per group and, between groups, looks
    into the ledger through its own connection (what a restarted process would see)."""

    remote: ClassVar[bool] = True
    default_model = "stepper"

    def __init__(self, cfg: ModelsConfig, ledger_path: Path) -> None:
        tasks = {name: TaskSpec(name, t) for name, t in cfg.tasks.items()}
        super().__init__("primary", cfg.backends["primary"], tasks)
        self.ledger_path = ledger_path
        self.config_hash = cfg.config_hash()
        self.seen_durable: list[list[int]] = []

    def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        raise AssertionError("the service must take results as they complete")

    def iter_batch(self, requests: Sequence[ModelRequest], max_rows: int, on_results: object = None) -> Iterator[list[tuple[int, ModelResult]]]:
        # on_results is not called: the service records what it is handed over, as it is handed over
        reader = CallLedger(self.ledger_path, retention_s=3600)
        try:
            for j, _req in enumerate(requests):
                coords = [("events", 0, o) for o in range(len(requests))]
                self.seen_durable.append(sorted(reader.lookup(coords, self.config_hash)))
                yield [(j, ModelResult(label="positive", confidence=0.9, model_name=self.model, input_tokens=10, output_tokens=5))]
        finally:
            reader.close()


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "model_input": ["great"] * n,
            "tenant": ["acme"] * n,
            "source": ["tickets"] * n,
            "src_topic": ["events"] * n,
            "src_partition": [0] * n,
            "src_offset": list(range(n)),
        }
    )


def test_each_answer_is_durable_before_the_next_result_is_taken(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite"
    cfg = ModelsConfig.model_validate(
        {
            "chain": ["primary", "local", "rules"],
            "backends": {"primary": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "stepper"}, "local": {"kind": "local"}, "rules": {"kind": "rules"}},
            "pricing": {"stepper": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            "cache": {"enabled": False},
            "ledger": {"path": str(ledger_path)},
        }
    )
    stepper = _Stepper(cfg, ledger_path)
    svc = ModelService(cfg, backends={"primary": stepper})
    out = svc.process(_frame(4)).results
    # before result j was handed over, results 0..j-1 were already committed (the whole
    # batch was still "in flight" for the step: nothing had left it yet)
    assert stepper.seen_durable == [[], [0], [0, 1], [0, 1, 2]]
    assert out["model_tier"].to_list() == ["primary"] * 4
    # what was recorded is exactly what left the step, and the spend was counted once
    again = svc.process(_frame(4)).results
    assert again["model_replayed"].all()
    cols = [c for c in out.columns if c != "model_replayed"]
    assert again.select(cols).equals(out.select(cols))
    day = svc.budgets.day()
    spend = svc.ledger.spend(day)  # type: ignore[union-attr]
    assert abs(spend[("tenant", "acme")] - out["model_cost_usd"].sum()) < 1e-12
    svc.close()


def test_openai_backend_hands_over_results_as_they_complete() -> None:
    with OpenAITestServer(Behaviour(latency_s=0.0)) as srv:
        cfg = BackendConfig(kind="openai", base_url=srv.base_url, model="m", max_in_flight=4, timeout_s=5)
        tasks = {"sentiment": TaskSpec("sentiment", ModelsConfig().tasks["sentiment"])}
        backend = OpenAIBackend("primary", cfg, tasks)
        srv.update(hold=True)
        reqs = [ModelRequest(f"t:0:{i}", "great", "sentiment") for i in range(3)]
        groups = backend.iter_batch(reqs, max_rows=64)
        got: list[list[tuple[int, ModelResult]]] = []
        consumer = threading.Thread(target=lambda: got.extend(groups))
        consumer.start()
        deadline = time.monotonic() + 5
        while httpx.get(srv.base_url.rsplit("/v1", 1)[0] + "/_stats").json()["held"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == []  # all three in flight at once, none answered yet
        srv.update(hold=False)
        consumer.join(5)
        assert sorted(j for g in got for j, _ in g) == [0, 1, 2]
        assert all(r.ok for g in got for _, r in g)
        backend.close()


def test_server_does_not_count_an_answer_whose_client_is_gone() -> None:
    with OpenAITestServer(Behaviour()) as srv:
        srv.update(hold=True)
        body = {"model": "m", "messages": [{"role": "system", "content": "sentiment"}, {"role": "user", "content": "great"}]}
        try:
            httpx.post(srv.base_url + "/chat/completions", json=body, headers={"Idempotency-Key": "k"}, timeout=0.3)
        except httpx.TimeoutException:
            pass  # the client gave up and closed its connection while the answer was held
        stats = httpx.get(srv.base_url.rsplit("/v1", 1)[0] + "/_stats").json()
        assert stats == {"in_flight": 1, "held": 1}
        srv.update(hold=False)
        deadline = time.monotonic() + 5
        while not srv.log[0]["client_gone"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.log[0]["client_gone"] and not srv.log[0]["success"] and srv.log[0]["usage"] is None
        ok = httpx.post(srv.base_url + "/chat/completions", json=body, headers={"Idempotency-Key": "k"}, timeout=5)
        assert ok.status_code == 200
        assert srv.successes_by_key() == {"k": 1}

