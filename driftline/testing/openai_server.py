"""A small OpenAI-compatible chat completions server for tests, on loopback.

It answers ``POST /v1/chat/completions`` like a provider would (a JSON answer for the
task found in the system prompt, a ``usage`` block) and can be told to misbehave:
answer with planted content (``plants``: a marker in the user message -> the answer),
be slow, hang past the client's timeout, answer 429 with Retry-After, 500/503,
malformed JSON content, a body that is not JSON, wrong or missing usage figures,
reset the connection, 400/401/403, or 429 ``insufficient_quota``.  Failures are chosen
per ``(Idempotency-Key, attempt number)`` from a seed, so a run is reproducible
whatever order concurrent requests arrive in.  Every request is logged (key, attempt,
outcome, status, whether it succeeded, usage) in memory when it arrives and, optionally,
as a JSON line when it completes.  Like vLLM, the server drops an answer whose client
has gone away before it was ready (the client crashed or timed out): that request is
logged with ``client_gone`` and is not a success.  ``hold`` keeps every answer waiting
(requests stay in flight) until it is turned off: tests use it to crash a client at a
chosen moment.  Each entry has ``t`` (arrival) and ``done`` (answer sent or dropped).

``rpm`` limits requests per minute like a provider does: a token bucket of
``rpm_burst`` requests (default one second's worth, ``rpm / 60``, at least 1) refilled
at ``rpm / 60`` per second; a request that finds it empty gets 429 with the seconds
until the next token in ``Retry-After`` (logged with ``limited: true``).  ``per_model``
gives a model its own ``latency_s``, ``failure_rate``, ``failure_mix`` or ``hang_s``, so
one server can stand in for several models (or run one server per model).

With ``idempotency`` on, the server honours ``Idempotency-Key`` the way payment APIs
do: the first answer the model produced under a key (usable or not) is stored and
billed even if its client has gone away; a later request with the same key and the
same body gets the stored answer, logged with outcome ``replay`` (not a success, not
billed); the same key with a different body is refused with 422; a request whose key
is still being answered waits for that answer.  Errors (429, 5xx, resets...) are not
stored, so retries after a failure proceed.

In-process::

    with OpenAITestServer(Behaviour(latency_s=0.1)) as srv:
        srv.script("rate_limit", "ok")      # next two outcomes, then the seeded mix
        url = srv.base_url                  # http://127.0.0.1:PORT/v1

As a subprocess (survives a flow killed with SIGKILL)::

    python -m driftline.testing.openai_server --port 0 --log /tmp/log.jsonl --failure-rate 0.3

prints ``READY http://127.0.0.1:PORT/v1`` once listening.  ``GET /_log`` returns the log,
``POST /_behaviour`` (a JSON object of :class:`Behaviour` fields) changes the behaviour,
``GET /_stats`` returns ``{"in_flight": n, "held": m}``.  ``--idempotency`` turns on
key honouring.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

OUTCOMES = (
    "ok",
    "slow",
    "timeout",
    "rate_limit",
    "server_error",
    "unavailable",
    "malformed",
    "garbage",
    "bad_usage",
    "no_usage",
    "reset",
    "bad_request",
    "unauthorized",
    "forbidden",
    "quota",
)
#: Outcomes whose answer a client can use (the request "succeeded" and is billed once); a
#: ``timeout`` answer (too late for the client) also succeeds when the server stores it.
SUCCESS_OUTCOMES = frozenset({"ok", "slow", "bad_usage", "no_usage"})

DEFAULT_MIX = {"timeout": 1.0, "rate_limit": 1.0, "server_error": 1.0, "malformed": 1.0, "reset": 1.0, "unavailable": 1.0}

_POS = {"good", "great", "excellent", "love", "happy", "thanks", "amazing", "awesome", "perfect", "helpful", "fast", "nice"}
_NEG = {"bad", "terrible", "awful", "hate", "angry", "broken", "slow", "late", "worst", "poor", "useless", "rude", "refund"}
_WORD = re.compile(r"[a-z']+")


@dataclass(slots=True)
class Behaviour:
    """How the server answers; every field can be changed while it runs."""

    latency_s: float = 0.0
    failure_rate: float = 0.0
    failure_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 0
    retry_after: str = "0.05"
    hang_s: float = 2.0
    usage: dict[str, Any] | None = None
    content: str | None = None
    api_key: str | None = None
    model_version: str = "test-model-2026-01"
    hold: bool = False
    idempotency: bool = False
    rpm: float | None = None
    rpm_burst: float | None = None
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: planted answers: when the user message contains a key, the answer's content is its value
    plants: dict[str, str] = field(default_factory=dict)

    def for_model(self, model: str | None) -> Behaviour:
        """This behaviour with the ``per_model`` overrides of ``model`` applied."""
        over = self.per_model.get(model or "")
        if not over:
            return self
        unknown = set(over) - _PER_MODEL
        if unknown:
            raise ValueError(f"per_model[{model!r}]: fields {sorted(unknown)} cannot vary per model (allowed: {sorted(_PER_MODEL)})")
        b = Behaviour(**{f.name: getattr(self, f.name) for f in fields(Behaviour)})
        for k, v in over.items():
            setattr(b, k, v)
        return b


_PER_MODEL = frozenset({"latency_s", "failure_rate", "failure_mix", "hang_s", "seed"})


@dataclass(slots=True)
class _Stored:
    """The answer kept under an idempotency key."""

    fingerprint: str
    body: bytes


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _answer(messages: list[dict[str, Any]], plants: dict[str, str] | None = None) -> str:
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "").lower()
    user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
    for marker, planted in (plants or {}).items():
        if marker in user:
            return planted
    words = _WORD.findall(user.lower())
    if "sentiment" in system:
        pos = sum(w in _POS for w in words)
        neg = sum(w in _NEG for w in words)
        label = "positive" if pos > neg else "negative" if neg > pos else "neutral"
        return json.dumps({"label": label, "confidence": 0.9 if label != "neutral" else 0.7})
    if "classify" in system:
        m = re.search(r"categories: (.*?)\. ", system)
        cats = [c.strip() for c in m.group(1).split(",")] if m else ["other"]
        label = next((c for c in cats if c in words), cats[0])
        return json.dumps({"label": label, "confidence": 0.8})
    if "summarize" in system:
        return json.dumps({"summary": " ".join(user.split()[1:13]), "confidence": 0.8})
    return "{}"


class _Server(ThreadingHTTPServer):
    # a class attribute: listen() runs in the constructor, so setting it on the instance
    # afterwards left the backlog at 5, and bursts of concurrent clients got refused
    daemon_threads = True
    request_queue_size = 256


class OpenAITestServer:
    """The server; a context manager that starts it on 127.0.0.1 (port 0 picks a free one)."""

    def __init__(self, behaviour: Behaviour | None = None, *, port: int = 0, log_path: str | Path | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self._lock = threading.Lock()
        self._script: deque[str] = deque()
        self._attempts: dict[str, int] = defaultdict(int)
        self._stored: dict[str, _Stored] = {}
        self._running: dict[str, threading.Event] = {}
        self._seq = 0
        self._in_flight = 0
        self._held = 0
        self._bucket: tuple[float, float] | None = None  # (tokens, at) of the rpm limit
        self.log: list[dict[str, Any]] = []
        self._log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # one write per answer and no Nagle delay: keep-alive latency stays at the configured value
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr access logs
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/_log":
                    with server._lock:
                        body = json.dumps(server.log).encode()
                    self._send(200, body)
                elif self.path.rstrip("/") == "/_stats":
                    with server._lock:
                        body = json.dumps({"in_flight": server._in_flight, "held": server._held}).encode()
                    self._send(200, body)
                elif self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": server.behaviour.model_version, "object": "model"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.rstrip("/") == "/_behaviour":
                    server.update(**json.loads(raw or b"{}"))
                    self._send(200, b"{}")
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                server._handle_completion(self, raw)

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self._headers_buffer.append(b"\r\n")  # end_headers() without its separate flush
                self.wfile.write(b"".join(self._headers_buffer) + body)
                self._headers_buffer = []

        self._httpd = _Server(("127.0.0.1", port), Handler)
        self._thread: threading.Thread | None = None

    # -- control ----------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def update(self, **changes: Any) -> None:
        """Change behaviour fields while running."""
        names = {f.name for f in fields(Behaviour)}
        with self._lock:
            for k, v in changes.items():
                if k not in names:
                    raise ValueError(f"unknown behaviour field {k!r}")
                setattr(self.behaviour, k, v)

    def script(self, *outcomes: str) -> None:
        """Force the next outcomes, in order, before the seeded mix resumes."""
        for o in outcomes:
            if o not in OUTCOMES:
                raise ValueError(f"unknown outcome {o!r}; one of {OUTCOMES}")
        with self._lock:
            self._script.extend(outcomes)

    def start(self) -> OpenAITestServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._log_file:
            self._log_file.close()

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def successes_by_key(self) -> dict[str, int]:
        """Successful (usable, billed) answers per idempotency key."""
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for e in self.log:
                if e["success"]:
                    out[e["key"]] += 1
        return dict(out)

    # -- serving ----------------------------------------------------------
    def _over_limit(self, now: float) -> float | None:
        """Take a token of the rpm bucket (under the lock): None, or the seconds until one is free."""
        b = self.behaviour
        if not b.rpm:
            return None
        rate = b.rpm / 60.0
        cap = b.rpm_burst if b.rpm_burst is not None else max(1.0, rate)
        tokens, at = self._bucket if self._bucket is not None else (cap, now)
        tokens = min(cap, tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._bucket = (tokens - 1.0, now)
            return None
        self._bucket = (tokens, now)
        return (1.0 - tokens) / rate

    def _choose(self, key: str, attempt: int, b: Behaviour) -> str:
        if self._script:
            return self._script.popleft()
        if b.failure_rate <= 0:
            return "ok"
        rng = random.Random(f"{b.seed}:{key}:{attempt}")
        if rng.random() >= b.failure_rate:
            return "ok"
        kinds = sorted(b.failure_mix)
        return rng.choices(kinds, weights=[b.failure_mix[k] for k in kinds])[0]

    def _handle_completion(self, h: Any, raw: bytes) -> None:
        arrived = time.time()
        key = h.headers.get("Idempotency-Key") or ""
        running: threading.Event | None = None
        if key and self.behaviour.idempotency:
            running = self._claim(key)
            if running is None:
                self._replay(h, key, raw, arrived)
                return
        try:
            req = json.loads(raw)
            messages = req["messages"]
        except (ValueError, KeyError, TypeError):
            req, messages = {}, None
        limited: float | None = None
        with self._lock:
            b = self.behaviour.for_model(req.get("model") if isinstance(req, dict) else None)
            self._seq += 1
            self._in_flight += 1
            seq = self._seq
            attempt = self._attempts[key] = self._attempts[key] + 1 if key else 1
            if messages is None:
                outcome = "bad_request"
            elif b.api_key is not None and h.headers.get("Authorization") != f"Bearer {b.api_key}":
                outcome = "unauthorized"
            elif (limited := self._over_limit(arrived)) is not None:
                outcome = "rate_limit"
            else:
                outcome = self._choose(key or f"seq-{seq}", attempt, b)
        content = b.content if b.content is not None else (_answer(messages, b.plants) if messages else "")
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages or [])
        usage: dict[str, Any] | None = dict(b.usage) if b.usage is not None else {
            "prompt_tokens": _tokens(prompt_chars),
            "completion_tokens": _tokens(len(content)),
        }
        if usage is not None and b.usage is None:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        status = 200
        headers: dict[str, str] = {}
        body: bytes | None = None
        if outcome == "rate_limit":
            status, headers = 429, {"Retry-After": f"{limited:.3f}" if limited is not None else b.retry_after}
            body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
        elif outcome == "quota":
            status, body = 429, b'{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}'
        elif outcome == "server_error":
            status, body = 500, b'{"error": {"message": "The server had an error", "type": "server_error"}}'
        elif outcome == "unavailable":
            status, headers, body = 503, {"Retry-After": b.retry_after}, b'{"error": {"message": "overloaded"}}'
        elif outcome == "bad_request":
            status, body = 400, b'{"error": {"message": "invalid request", "type": "invalid_request_error"}}'
        elif outcome == "unauthorized":
            status, body = 401, b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}'
        elif outcome == "forbidden":
            status, body = 403, b'{"error": {"message": "forbidden", "type": "permission_error"}}'
        elif outcome == "garbage":
            body = b"<html>502 Bad Gateway</html>"
        elif outcome == "malformed":
            content = '{"label": "positive", "confidence": '  # truncated JSON
        elif outcome == "bad_usage":
            usage = {"prompt_tokens": -5, "completion_tokens": "many", "total_tokens": 3}
        elif outcome == "no_usage":
            usage = None
        success = outcome in SUCCESS_OUTCOMES
        if body is None and outcome != "reset":
            payload: dict[str, Any] = {
                "id": f"chatcmpl-{seq}",
                "object": "chat.completion",
                "created": int(arrived),
                "model": str(req.get("model") or b.model_version),
                "system_fingerprint": b.model_version,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            }
            if usage is not None:
                payload["usage"] = usage
            body = json.dumps(payload).encode()
        entry = {
            "seq": seq,
            "t": round(arrived, 4),
            "key": key,
            "attempt": attempt,
            "outcome": outcome,
            "status": 0 if outcome == "reset" else status,
            "success": success,
            "model": req.get("model") if isinstance(req, dict) else None,
            "usage": usage if status == 200 and outcome not in ("garbage", "reset") else None,  # billed answers
            "client_gone": False,
            "replay": False,
            "limited": limited is not None,
            "done": None,
            "traceparent": h.headers.get("traceparent"),
        }
        with self._lock:
            self.log.append(entry)
        try:
            billed = status == 200 and outcome not in ("garbage", "reset")  # an answer the model produced, usable or not
            self._complete(h, entry, b, outcome, status, body, headers, stored=_Stored(_fingerprint(raw), body) if running is not None and billed and body else None)
        finally:
            with self._lock:
                self._in_flight -= 1
                entry["done"] = round(time.time(), 4)
                if running is not None and self._running.get(key) is running:
                    del self._running[key]
                    running.set()
                if self._log_file:
                    self._log_file.write(json.dumps(entry) + "\n")
                    self._log_file.flush()

    def _claim(self, key: str) -> threading.Event | None:
        """Become the request answering ``key`` (its completion event), or None when an
        answer is stored; waits while another request with the key is being answered."""
        while True:
            with self._lock:
                if key in self._stored:
                    return None
                running = self._running.get(key)
                if running is None:
                    running = self._running[key] = threading.Event()
                    return running
            running.wait(60)

    def _replay(self, h: Any, key: str, raw: bytes, arrived: float) -> None:
        """Answer a request whose key already has a stored answer (not billed again)."""
        with self._lock:
            stored = self._stored[key]
            self._seq += 1
            self._attempts[key] += 1
            conflict = stored.fingerprint != _fingerprint(raw)
            entry = {
                "seq": self._seq, "t": round(arrived, 4), "key": key, "attempt": self._attempts[key],
                "outcome": "idempotency_conflict" if conflict else "replay", "status": 422 if conflict else 200,
                "success": False, "model": None, "usage": None, "client_gone": False, "replay": not conflict, "limited": False, "done": round(time.time(), 4),
            }
            self.log.append(entry)
            if self._log_file:
                self._log_file.write(json.dumps(entry) + "\n")
                self._log_file.flush()
        if conflict:
            body = b'{"error": {"message": "Keys for idempotent requests can only be used with the same parameters they were first used with.", "type": "idempotency_error"}}'
            h._send(422, body, {"Idempotent-Replayed": "false"})
        else:
            h._send(200, stored.body, {"Idempotent-Replayed": "true"})

    def _complete(
        self, h: Any, entry: dict[str, Any], b: Behaviour, outcome: str, status: int, body: bytes | None, headers: dict[str, str], *, stored: _Stored | None
    ) -> None:
        delay = 0.0 if entry["limited"] else b.latency_s + (b.hang_s if outcome == "timeout" else 0.0) + (max(b.latency_s, 0.2) if outcome == "slow" else 0.0)
        if delay:
            time.sleep(delay)
        if self.behaviour.hold and not entry["limited"]:
            with self._lock:
                self._held += 1
            try:
                while self.behaviour.hold:
                    time.sleep(0.005)
            finally:
                with self._lock:
                    self._held -= 1
        if stored is not None:  # honouring keys: the answer exists (and is billed) from now on
            with self._lock:
                self._stored[entry["key"]] = stored
                if outcome == "timeout":  # a late but usable answer, kept for the retry
                    entry["success"] = True
        if outcome == "reset":
            h.close_connection = True
            try:
                h.connection.shutdown(2)
            except OSError:
                pass
            return
        if _client_gone(h.connection):  # nobody to deliver the answer to
            h.close_connection = True
            with self._lock:
                entry["client_gone"] = True
                if stored is None:  # like vLLM: an answer nobody received is not billed
                    entry["success"] = False
                    entry["usage"] = None
            return
        assert body is not None
        try:
            h._send(status, body, headers)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            h.close_connection = True


def _fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _client_gone(sock: socket.socket) -> bool:
    """Whether the peer closed its end (EOF or reset) while its request was being answered."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Entries of a JSON-lines request log written by ``--log``: its complete lines (a
    server still running may be writing the last one; that one is read next time)."""
    p = Path(path)
    if not p.exists():
        return []
    complete = p.read_text("utf-8").split("\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


def start_subprocess(*args: str, python: str = sys.executable, timeout_s: float = 20.0) -> tuple[subprocess.Popen[str], str]:
    """Start the server as a child process; returns it and its base URL once it listens."""
    proc = subprocess.Popen([python, "-m", "driftline.testing.openai_server", *args], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return proc, line.split(" ", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the OpenAI test server did not start")


def _parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in OUTCOMES:
            raise argparse.ArgumentTypeError(f"unknown outcome {name!r}; one of {', '.join(OUTCOMES)}")
        mix[name] = float(weight or 1)
    return mix


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m driftline.testing.openai_server", description="OpenAI-compatible test server on 127.0.0.1.")
    p.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    p.add_argument("--log", default=None, help="append one JSON line per request to this file")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--failure-rate", type=float, default=0.0, help="share of requests that fail, in [0, 1]")
    p.add_argument("--mix", type=_parse_mix, default=None, help="failure kinds and weights, e.g. timeout=1,rate_limit=2,server_error=1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-after", default="0.05", help="Retry-After header value of 429/503 answers")
    p.add_argument("--hang-s", type=float, default=2.0, help="how long a 'timeout' answer hangs")
    p.add_argument("--api-key", default=None, help="require this bearer token")
    p.add_argument("--idempotency", action="store_true", help="honour Idempotency-Key: the same key gets the stored answer, billed once")
    p.add_argument("--rpm", type=float, default=None, help="requests per minute; beyond it, 429 with Retry-After")
    p.add_argument("--rpm-burst", type=float, default=None, help="bucket size of the rpm limit (default rpm/60, at least 1)")
    a = p.parse_args(argv)
    b = Behaviour(
        latency_s=a.latency_ms / 1000.0, failure_rate=a.failure_rate, seed=a.seed, retry_after=a.retry_after, hang_s=a.hang_s, api_key=a.api_key, idempotency=a.idempotency,
        rpm=a.rpm, rpm_burst=a.rpm_burst,
    )
    if a.mix:
        b.failure_mix = a.mix
    srv = OpenAITestServer(b, port=a.port, log_path=a.log)
    print(f"READY {srv.base_url}", flush=True)
    try:
        srv._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["Behaviour", "OpenAITestServer", "OUTCOMES", "SUCCESS_OUTCOMES", "read_log", "start_subprocess"]
