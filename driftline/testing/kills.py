"""Kill runs against a paid provider: what a SIGKILL re-bills (for tests and the torture harness).

:func:`remote_kill_run` runs ``driftline run enrich --drain`` against the loopback
provider (a separate process that outlives the kills: 30 ms per request, 10% failures:
429, 500, 503, malformed answers, connection resets), SIGKILLs the whole process group at
random moments, some during start-up, resumes from the same recovery folder until the
topic is drained, and measures from the provider's request log and the ledger as it was
at each kill which requests were in flight and which events were answered twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from driftline.models.ledger import recorded_events
from driftline.testing.openai_server import read_log, start_subprocess


def _event(key: str) -> str:
    return key.split("/")[0]


class _LogLines:
    """Lines of the server's request log so far (one per completed request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            self.offset += len(chunk)
            self.lines += chunk.count(b"\n")
        return self.lines


def start_flow_process(
    flow: str,
    env: dict[str, str],
    recovery: Path,
    *,
    epoch_interval: float = 0.5,
    drain: bool = True,
    final: bool = False,
    fault: str | None = None,
    stderr: Any = subprocess.PIPE,
    new_session: bool = False,
) -> subprocess.Popen[Any]:
    """``driftline run <flow>`` as a subprocess on ``recovery``, the way a kill run starts it.

    ``final`` ends the input (windows still open are emitted rather than kept in the
    recovery folder); ``fault`` names a fault point (``$DRIFTLINE_FAULT``).  With the
    default ``stderr`` the log is read as text by :func:`finish_flow_process`."""
    cmd = [sys.executable, "-m", "driftline.cli", "run", flow, "--recovery-dir", str(recovery), "--epoch-interval", str(epoch_interval)]
    if drain:
        cmd.append("--drain")
    run_env = dict(env)
    if final:
        run_env["DRIFTLINE__MONITORING__END_OF_INPUT"] = "close"
    if fault:
        run_env["DRIFTLINE_FAULT"] = fault
    return subprocess.Popen(cmd, env=run_env, stdout=subprocess.DEVNULL, stderr=stderr, text=stderr is subprocess.PIPE, start_new_session=new_session)


def finish_flow_process(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    """Wait for a flow started by :func:`start_flow_process`; its log (stderr).  Exit 0 and a
    SIGKILL are expected; anything else fails with the end of the log."""
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode not in (0, 137, -signal.SIGKILL):
        raise AssertionError(f"flow failed with {proc.returncode}:\n{err[-3000:]}")
    return err


@dataclass
class RemoteKillResult:
    """What :func:`remote_kill_run` saw."""

    root: Path
    kills: int
    in_flight: list[int] = field(default_factory=list)  # per kill: at the provider + answered, not yet in the ledger
    at_server: list[int] = field(default_factory=list)
    not_durable: list[set[str]] = field(default_factory=list)
    open_at: list[set[str]] = field(default_factory=list)  # events whose request the provider was answering at each kill
    answered_twice: set[str] = field(default_factory=set)
    billed: set[str] = field(default_factory=set)  # events the provider answered at least once
    replays: int = 0  # requests answered from the provider's idempotency store
    requests: int = 0
    gaps_ms: list[float] = field(default_factory=list)  # answer-to-kill gaps of answers not yet in the ledger

    def summary(self) -> str:
        return (
            f"{self.kills} SIGKILLs: requests in flight at the kills {self.in_flight} (at the provider {self.at_server}, answered but not yet in the ledger "
            f"{[len(b) for b in self.not_durable]}); events answered twice {len(self.answered_twice)}; replayed by the provider {self.replays}; requests {self.requests}"
        )


def remote_kill_run(
    bootstrap: str, topic: str, workdir: Path, *, events: int, kills: int, idempotent: bool, seed: int = 7, settings: dict[str, Any] | None = None
) -> RemoteKillResult:
    """Drain ``topic`` (holding ``events`` events) with ``kills`` SIGKILLs; ``settings``
    are merged into the configuration (e.g. the Kafka output topics)."""
    log_path = workdir / "requests.jsonl"
    # no injected timeouts, and a client timeout far above the latency: an answer racing a
    # client's timeout would be billed twice without any kill
    mix = "rate_limit=1,server_error=1,unavailable=1,malformed=1,reset=1"
    args = ["--port", "0", "--log", str(log_path), "--latency-ms", "30", "--failure-rate", "0.1", "--mix", mix, "--seed", "9", "--retry-after", "0.02"]
    server, base_url = start_subprocess(*args, *(["--idempotency"] if idempotent else []))
    root, recovery = workdir / "out", workdir / "recovery"
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
        "sinks": {"root": str(root)},
        "models": {
            "chain": ["primary", "local", "rules"],
            "backends": {
                "primary": {
                    "kind": "openai", "base_url": base_url, "model": "test-model", "timeout_s": 10, "max_in_flight": 16,
                    "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05, "max_retry_after_s": 1.0},
                    "circuit": {"failure_threshold": 50, "cooldown_s": 0.3},
                },
                "local": {"kind": "local"},
                "rules": {"kind": "rules"},
            },
            "pricing": {"test-model": {"input_per_mtok": 0.15, "output_per_mtok": 0.60}},
            "cache": {"enabled": False},  # synthetic texts repeat: every event must reach the provider
            "batching": {"max_rows": 64, "max_wait_ms": 100},
        },
    }
    for section, values in (settings or {}).items():
        config[section] = {**config.get(section, {}), **values}
    cfg_path = workdir / "driftline.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    cmd = [sys.executable, "-m", "driftline.cli", "--config", str(cfg_path), "run", "enrich", "--drain", "--recovery-dir", str(recovery), "--epoch-interval", "0.5"]
    rng = random.Random(seed + idempotent)
    kill_times: list[float] = []
    durable_at_kill: list[set[str]] = []  # events recorded in the ledger when each kill struck
    completed = _LogLines(log_path)
    try:
        for run in range(kills + 1):
            with open(workdir / f"run{run}.log", "w") as err:
                flow = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
                try:
                    if run < kills:
                        # a random moment: during start-up (no new answer yet) or after a random
                        # number of answers, plus a jitter that detaches it from any answer
                        target = completed.count() + (0 if rng.random() < 0.25 else rng.randint(1, max(1, events // (kills + 1))))
                        start = time.monotonic()
                        while completed.count() < target and flow.poll() is None and time.monotonic() - start < 120:
                            time.sleep(0.002)
                        time.sleep(rng.uniform(0.0, 0.5 if target == completed.count() == 0 else 0.03))
                        if flow.poll() is None:
                            os.killpg(flow.pid, signal.SIGKILL)
                            flow.wait(timeout=60)
                            # the kill's instant is the process's death: on a loaded machine it
                            # could still start a request between the signal and its end
                            kill_times.append(time.time())
                            durable_at_kill.append(recorded_events(recovery / "model_ledger.sqlite"))
                    flow.wait(timeout=300)
                finally:
                    if flow.poll() is None:
                        os.killpg(flow.pid, signal.SIGKILL)
                        flow.wait()
            if flow.returncode == 0:
                break
        if flow.returncode != 0:
            raise RuntimeError(f"the last run failed ({flow.returncode}):\n{(workdir / f'run{run}.log').read_text()[-3000:]}")
        # requests the killed clients left behind finish and are logged (a loaded machine
        # can delay the log lines by more than a second): wait until the log is quiet
        seen, deadline = -1, time.monotonic() + 30
        while completed.count() != seen and time.monotonic() < deadline:
            seen = completed.count()
            time.sleep(1.0)
    finally:
        server.kill()
        server.wait(timeout=10)
    return billing_exposure(read_log(log_path), kill_times, durable_at_kill, root)


def billing_exposure(log: list[dict[str, Any]], kill_times: list[float], durable_at_kill: list[set[str]], root: Path) -> RemoteKillResult:
    """In flight at each kill: requests the provider was still answering (it drops those
    answers, or with idempotency stores them), and answers it had sent that were not yet
    in the ledger (on the wire, in the socket, being parsed: the process had not recorded
    them).  An answer the previous, dying run received counts as in flight at its kill."""
    res = RemoteKillResult(root=root, kills=len(kill_times), requests=len(log))
    opened = [[e for e in log if e["t"] <= k and (e["done"] is None or e["done"] > k)] for k in kill_times]
    res.at_server = [len(o) for o in opened]
    res.open_at = [{_event(e["key"]) for e in o} for o in opened]
    for n, (k, durable) in enumerate(zip(kill_times, durable_at_kill)):
        since = kill_times[n - 1] if n else 0.0
        res.not_durable.append({_event(e["key"]) for e in log if e["success"] and since < e["t"] and e["done"] <= k} - durable)
    res.in_flight = [a + len(b) for a, b in zip(res.at_server, res.not_durable)]
    billed = Counter(_event(e["key"]) for e in log if e["success"])
    res.billed = set(billed)
    res.answered_twice = {ev for ev, n in billed.items() if n > 1}
    res.replays = sum(1 for e in log if e.get("replay"))
    res.gaps_ms = sorted(
        round(1000 * (k - e["done"]), 1)
        for k, nd in zip(kill_times, res.not_durable)
        for e in log
        if e["success"] and _event(e["key"]) in nd and e["done"] <= k and k - e["done"] < 5
    )
    return res
