"""The loopback test server itself: seeded failures, request log, subprocess mode."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from driftline.testing.openai_server import Behaviour, OpenAITestServer, read_log, start_subprocess


_CLIENT = httpx.Client(timeout=5)


def _post(url: str, key: str) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "system", "content": "sentiment"}, {"role": "user", "content": "great"}]}
    return _CLIENT.post(f"{url}/chat/completions", json=body, headers={"Idempotency-Key": key})


def test_failures_are_seeded_per_key_and_attempt() -> None:
    outcomes = []
    for _ in range(2):
        with OpenAITestServer(Behaviour(failure_rate=0.3, seed=7, failure_mix={"server_error": 1, "rate_limit": 1, "malformed": 1})) as srv:
            for i in range(200):
                _post(srv.base_url, f"k{i % 100}")  # two attempts per key
            outcomes.append([(e["key"], e["attempt"], e["outcome"]) for e in sorted(srv.log, key=lambda e: (e["key"], e["attempt"]))])
    assert outcomes[0] == outcomes[1]
    counts = Counter(o for _, _, o in outcomes[0])
    assert 0.2 < 1 - counts["ok"] / 200 < 0.4
    assert {"server_error", "rate_limit", "malformed"} <= set(counts)


def test_rate_limit_answer_carries_retry_after() -> None:
    with OpenAITestServer(Behaviour(retry_after="3")) as srv:
        srv.script("rate_limit")
        r = _post(srv.base_url, "k")
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        ok = _post(srv.base_url, "k")
        assert ok.status_code == 200 and json.loads(ok.json()["choices"][0]["message"]["content"])["label"] == "positive"
        assert [(e["attempt"], e["success"]) for e in srv.log] == [(1, False), (2, True)]


def test_subprocess_mode_writes_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    proc, url = start_subprocess("--port", "0", "--log", str(log), "--latency-ms", "1")
    try:
        assert _post(url, "a").status_code == 200
        assert _post(url, "b").status_code == 200
        deadline = time.monotonic() + 5  # a line is written once its answer has gone out
        while len(read_log(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        entries = read_log(log)
        assert [e["key"] for e in entries] == ["a", "b"] and all(e["success"] for e in entries)
        assert httpx.get(url.rsplit("/v1", 1)[0] + "/_log").json()[0]["key"] == "a"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_idempotency_keys_are_honoured_like_a_payment_api() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "sentiment"}, {"role": "user", "content": "great"}]}
    with OpenAITestServer(Behaviour(idempotency=True)) as srv:
        first = _post(srv.base_url, "k")
        again = _post(srv.base_url, "k")
        assert first.status_code == again.status_code == 200 and again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        # the same key with other parameters is refused, not answered
        other = _CLIENT.post(f"{srv.base_url}/chat/completions", json={**body, "model": "n"}, headers={"Idempotency-Key": "k"})
        assert other.status_code == 422
        # a failed answer is not stored: the retry is a real request
        srv.script("server_error")
        assert _post(srv.base_url, "f").status_code == 500
        assert _post(srv.base_url, "f").status_code == 200
        assert [(e["key"], e["outcome"], e["success"], e["replay"]) for e in srv.log] == [
            ("k", "ok", True, False),
            ("k", "replay", False, True),
            ("k", "idempotency_conflict", False, False),
            ("f", "server_error", False, False),
            ("f", "ok", True, False),
        ]
        assert srv.successes_by_key() == {"k": 1, "f": 1}
        assert all(e["usage"] is None for e in srv.log if not e["success"])


def test_an_answer_whose_client_is_gone_is_stored_and_replayed_when_keys_are_honoured() -> None:
    """What makes a kill re-bill nothing: the provider billed the answer nobody received,
    and gives it to the restarted client instead of computing (and billing) it again."""
    with OpenAITestServer(Behaviour(idempotency=True)) as srv:
        srv.update(hold=True)
        try:
            httpx.post(srv.base_url + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "great"}]}, headers={"Idempotency-Key": "k"}, timeout=0.3)
        except httpx.TimeoutException:
            pass
        # a second request with the key waits for the first one instead of computing it again
        late: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: late.append(httpx.post(srv.base_url + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "great"}]}, headers={"Idempotency-Key": "k"}, timeout=5)))
        waiter.start()
        time.sleep(0.2)
        srv.update(hold=False)
        waiter.join(5)
        assert late[0].status_code == 200 and late[0].headers["idempotent-replayed"] == "true"
        assert [(e["outcome"], e["success"], e["client_gone"]) for e in srv.log] == [("ok", True, True), ("replay", False, False)]
        assert srv.successes_by_key() == {"k": 1}
