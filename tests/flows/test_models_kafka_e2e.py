"""Batched model calls on the real broker against the loopback provider (issue 7, done-when).

1. 5,000 events through the enrich flow while the OpenAI-compatible test server fails 30%
   of requests in mixed ways (timeouts, 429 with Retry-After, 500, 503, malformed JSON,
   connection resets): every event gets a result, with the tier that answered, the
   reasons the tiers before it did not, the error class and the retry count, and those
   figures agree request for request with the server's own log.
2. The flow, run as a subprocess, is killed with SIGKILL in the middle of a run (results
   answered by the provider but not yet out of the batching step, other requests in
   flight), then restarted from its recovery folder: the server's log shows at most one
   successful request per event, exactly one for every event answered by the provider.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml

from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.models.ledger import recorded_events
from driftline.producer import produce
from driftline.runner import run_flow
from driftline.testing.openai_server import SUCCESS_OUTCOMES, Behaviour, OpenAITestServer, read_log, start_subprocess

pytestmark = pytest.mark.kafka

# what the client files each injected failure as (model_error_class / fallback reason)
ERROR_CLASS_OF = {"timeout": "timeout", "rate_limit": "rate_limit", "server_error": "server_error", "unavailable": "server_error", "reset": "network", "malformed": "bad_output"}


def _models(base_url: str, *, timeout_s: float, circuit: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "chain": ["primary", "local", "rules"],
        "backends": {
            "primary": {
                "kind": "openai",
                "base_url": base_url,
                "model": "test-model",
                "timeout_s": timeout_s,
                "connect_timeout_s": 2.0,
                "max_in_flight": 16,
                "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05, "jitter": 0.25, "max_retry_after_s": 1.0},
                "circuit": circuit or {"failure_threshold": 12, "cooldown_s": 0.3, "half_open_successes": 2},
            },
            "local": {"kind": "local"},
            "rules": {"kind": "rules"},
        },
        "pricing": {"test-model": {"input_per_mtok": 0.15, "output_per_mtok": 0.60}},
        "cache": {"enabled": False},  # texts repeat across synthetic events: every event must reach the provider
        "batching": {"max_rows": 64, "max_wait_ms": 100},
    }


def _key(row: dict[str, Any]) -> str:
    return f"{row['src_topic']}:{row['src_partition']}:{row['src_offset']}"


def _event(idempotency_key: str) -> str:
    """The event (source coordinates) a request was for: its idempotency key is
    ``topic:partition:offset/task/tier/config`` (``/fix`` appended for a corrective retry)."""
    return idempotency_key.split("/")[0]


def _read(root: Path, dataset: str) -> pl.DataFrame:
    return pl.read_parquet(str(root / dataset / "**" / "*.parquet"))


def test_every_event_gets_a_result_that_agrees_with_the_server_log(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("models-e2e")
    behaviour = Behaviour(latency_s=0.002, failure_rate=0.3, seed=7, retry_after="0.02", hang_s=0.8)
    with OpenAITestServer(behaviour) as srv:
        cfg = load_config(
            None,
            env={},
            overrides={
                "kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
                "sinks": {"root": str(tmp_path / "out")},
                "models": _models(srv.base_url, timeout_s=0.5),
            },
        )
        sent = produce(kafka_bootstrap, topic, 5000, seed=21, invalid_rate=0.0, pii_rate=0.0, progress=False)
        recovery = tmp_path / "recovery"
        took = run_flow(build_enrich_flow(cfg, drain=True, state_dir=recovery), recovery_dir=recovery, epoch_interval=1.0)
        time.sleep(0.9)  # let requests the client timed out on finish hanging, so the log is complete
        log = list(srv.log)

    out = _read(tmp_path / "out", "enriched")
    # every event has exactly one result row
    assert out.height == len(sent) == 5000
    assert out["event_id"].n_unique() == 5000
    assert set(out["event_id"].to_list()) == {e.record["event_id"] for e in sent}
    assert out["model_label"].null_count() == 0 and out["model_tier"].null_count() == 0
    assert out["model_retries"].null_count() == 0 and not out["model_replayed"].any()
    assert set(out["model_tier"].unique().to_list()) <= {"primary", "local", "rules"}

    requests: Counter[str] = Counter(_event(e["key"]) for e in log)
    successes: Counter[str] = Counter(_event(e["key"]) for e in log if e["success"])
    outcomes_by_key: dict[str, list[str]] = {}
    last_class: dict[str, str] = {}  # what the client must have filed the key's last attempt as
    for e in sorted(log, key=lambda e: e["seq"]):
        outcomes_by_key.setdefault(_event(e["key"]), []).append(e["outcome"])
        # an answer the client timed out on before it was ready is dropped by the server (client_gone)
        last_class[_event(e["key"])] = "timeout" if e["client_gone"] else ERROR_CLASS_OF.get(e["outcome"], "none")
    assert all(k for k in requests), "a request went out without its Idempotency-Key"

    rows = out.select("src_topic", "src_partition", "src_offset", "model_tier", "model_fallback_reasons", "model_error_class", "model_retries", "model_cost_usd").to_dicts()
    keys = {_key(r) for r in rows}
    assert set(requests) <= keys, "the server saw a request for an event that has no result"

    tiers: Counter[str] = Counter()
    retried = 0
    for r in rows:
        k = _key(r)
        reasons = r["model_fallback_reasons"] or []
        tiers[r["model_tier"]] += 1
        if r["model_tier"] == "primary":
            # answered by the provider: one usable answer, after exactly model_retries failed or corrective attempts
            assert successes[k] == 1, (k, outcomes_by_key.get(k))
            assert requests[k] == 1 + r["model_retries"], (k, r["model_retries"], outcomes_by_key.get(k))
            assert outcomes_by_key[k][-1] in SUCCESS_OUTCOMES
            assert reasons == []
            assert r["model_cost_usd"] > 0
        elif "primary:privacy" in reasons:
            assert requests[k] == 0
        elif "primary:circuit_open" in reasons and requests[k] == 0:
            assert r["model_retries"] == 0 and r["model_error_class"] == "circuit_open"
        else:
            # the provider failed this event: every attempt is in the log, none succeeded
            assert successes[k] == 0, (k, outcomes_by_key.get(k))
            assert requests[k] == 1 + r["model_retries"], (k, r["model_retries"], outcomes_by_key.get(k))
            failed = [reason for reason in reasons if reason.startswith("primary:")]
            assert len(failed) == 1, reasons
            cls = failed[0].split(":", 1)[1]
            assert r["model_error_class"] == cls
            # the recorded class is the one of the last attempt (or circuit_open when the breaker cut the retries short)
            assert cls in (last_class[k], "circuit_open"), (k, cls, outcomes_by_key[k])
            assert r["model_tier"] in ("local", "rules")
        retried += r["model_retries"] > 0

    # the failures really were mixed and really were retried
    injected = Counter(e["outcome"] for e in log if not e["success"])
    assert sum(injected.values()) >= 0.2 * len(log)
    assert {"timeout", "rate_limit", "server_error", "unavailable", "malformed", "reset"} <= set(injected)
    assert len(log) == sum(1 + r["model_retries"] for r in rows if requests[_key(r)])
    why = Counter(reason for r in rows for reason in (r["model_fallback_reasons"] or []))
    assert tiers["primary"] >= 0.8 * 5000 and tiers["primary"] + tiers["local"] + tiers["rules"] == 5000, (tiers, why, Counter(e["outcome"] for e in log))
    assert retried >= 0.2 * 5000
    errors = Counter(r["model_error_class"] for r in rows if r["model_error_class"])
    print(
        f"\n5,000 events in {took:.1f}s; requests {len(log)}; injected failures {dict(injected)}; "
        f"tiers {dict(tiers)}; events retried {retried}; final error classes {dict(errors)}"
    )


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_sigkill_mid_run_then_restart_sends_one_successful_request_per_event(kafka_bootstrap: str, unique_topic, tmp_path: Path) -> None:
    topic = unique_topic("models-kill")
    events = 2000
    sent = produce(kafka_bootstrap, topic, events, seed=33, invalid_rate=0.0, pii_rate=0.0, progress=False)
    log_path = tmp_path / "requests.jsonl"
    server, base_url = start_subprocess(
        "--port", "0", "--log", str(log_path), "--latency-ms", "20", "--failure-rate", "0.2", "--seed", "3", "--retry-after", "0.02", "--hang-s", "0.8"
    )
    control = base_url.rsplit("/v1", 1)[0]
    root, recovery = tmp_path / "out", tmp_path / "recovery"
    ledger = recovery / "model_ledger.sqlite"
    config = {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
        "sinks": {"root": str(root)},
        "models": _models(base_url, timeout_s=0.5),
    }
    cfg_path = tmp_path / "driftline.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    cmd = [sys.executable, "-m", "driftline.cli", "--config", str(cfg_path), "run", "enrich", "--drain", "--recovery-dir", str(recovery), "--epoch-interval", "0.5"]

    def successes() -> list[dict[str, Any]]:
        return [e for e in read_log(log_path) if e["success"]]

    def stats() -> dict[str, int]:
        return httpx.get(f"{control}/_stats", timeout=5).json()

    try:
        with open(tmp_path / "run1.log", "w") as err:
            flow = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
            try:
                # mid-run: a third of the events answered by the provider
                _wait(lambda: len(successes()) >= events // 3 or flow.poll() is not None, "a third of the events to be answered")
                assert flow.poll() is None, "the flow finished before it could be killed"
                # freeze the provider: requests stay in flight, none completes
                httpx.post(f"{control}/_behaviour", json={"hold": True}, timeout=5).raise_for_status()
                _wait(lambda: stats()["held"] >= 1, "requests in flight")
                # every answer delivered so far is durable (results the step has not emitted yet included)
                answered_before = {_event(e["key"]) for e in successes()}
                _wait(lambda: answered_before <= recorded_events(ledger), "delivered answers to reach the ledger", timeout=10)
                in_flight = stats()["in_flight"]
                flow.send_signal(signal.SIGKILL)
                flow.wait(timeout=30)
            finally:
                if flow.poll() is None:
                    flow.kill()
        assert flow.returncode == -signal.SIGKILL
        committed_before = recorded_events(ledger)
        httpx.post(f"{control}/_behaviour", json={"hold": False}, timeout=5).raise_for_status()
        _wait(lambda: stats()["in_flight"] == 0, "held requests to complete")

        with open(tmp_path / "run2.log", "w") as err:
            done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=180)
        assert done.returncode == 0, (tmp_path / "run2.log").read_text()[-3000:]
        _wait(lambda: stats()["in_flight"] == 0, "the last requests to complete", timeout=5)
    finally:
        server.kill()
        server.wait(timeout=10)
    log = read_log(log_path)

    out = _read(root, "enriched")
    assert out.height == events and out["event_id"].n_unique() == events
    assert set(out["event_id"].to_list()) == {e.record["event_id"] for e in sent}

    successes_by_key: Counter[str] = Counter(_event(e["key"]) for e in log if e["success"])
    rows = out.select("src_topic", "src_partition", "src_offset", "model_tier", "model_replayed", "model_retries").to_dicts()
    by_key = {_key(r): r for r in rows}
    # the server's log: one successful request per event answered by the provider, none for the others
    assert max(successes_by_key.values()) == 1, [k for k, c in successes_by_key.items() if c > 1]
    for k, r in by_key.items():
        assert successes_by_key[k] == (1 if r["model_tier"] == "primary" else 0), (k, r)
    # the kill really hit a batch in progress: answers taken before it came back from the
    # ledger after the restart (no new request), requests in flight were dropped by the server
    replayed = {k for k, r in by_key.items() if r["model_replayed"]}
    assert replayed and replayed <= committed_before
    assert all(by_key[k]["model_tier"] == "primary" for k in answered_before)
    gone = [e for e in log if e.get("client_gone") and e["outcome"] in SUCCESS_OUTCOMES]
    assert gone, "no request was in flight at the kill"
    last_request: dict[str, int] = {}
    for e in log:
        last_request[_event(e["key"])] = max(last_request.get(_event(e["key"]), 0), e["seq"])
    assert all(last_request[_event(e["key"])] > e["seq"] for e in gone), "a request dropped at the kill was not sent again"
    failed = Counter(e["outcome"] for e in log if not e["success"] and e["outcome"] not in SUCCESS_OUTCOMES)
    tiers = Counter(r["model_tier"] for r in rows)
    print(
        f"\n{events} events, SIGKILL after {len(answered_before)} answers with {in_flight} requests open at the server; "
        f"requests {len(log)}; successes {sum(successes_by_key.values())}; dropped at the kill {len(gone)}; "
        f"replayed from the ledger {len(replayed)}; injected failures {dict(failed)}; tiers {dict(tiers)}"
    )
