"""A burst drained through the enrich flow against a provider that limits requests per
minute, with driftline configured at that limit (issue 19, rate limits): shared by
``tests/flows/test_models_ratelimit_kafka.py`` (reduced) and ``bench/bench_ratelimit.py``
(full size).

The loopback server runs as a separate process (``--rpm``: a token bucket of one
second's worth, 429 with Retry-After beyond it); the flow runs as ``processes``
processes of one Bytewax cluster (``bytewax.run.cli_main`` with loopback addresses),
sharing the call ledger, hence the limiter.  :func:`drain_at_limit` returns the figures
the test checks and the bench prints.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from driftline.config.models import RateLimitsConfig
from driftline.producer import produce
from driftline.testing.openai_server import read_log, start_subprocess

HEADROOM = RateLimitsConfig().headroom

_PROCESS = """
import sys
from bytewax.run import cli_main
from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
cfg = load_config(sys.argv[1])
cli_main(build_enrich_flow(cfg, drain=True), workers_per_process=1, process_id=int(sys.argv[3]), addresses=sys.argv[2].split(","))
"""


@dataclass
class DrainFigures:
    events: int
    rows: int
    seconds: float
    implied_seconds: float  # what the limit implies: (requests - 1) * 60 / rpm
    requests: int
    rejected_429: int
    tiers: dict[str, int]
    max_per_minute: int  # most requests the provider saw in any 60 s window
    max_per_10s: int
    out_of_order: int  # rows of a partition written before a row of a lower offset

    def line(self, rpm: float, processes: int) -> str:
        return (
            f"{self.events} events, provider and driftline at {rpm:g} requests/min (paced at {rpm * (1 - HEADROOM):g}: {HEADROOM:.0%} headroom), "
            f"{processes} process(es): drained in {self.seconds:.1f}s "
            f"(the limit implies {self.implied_seconds:.1f}s); {self.requests} requests, {self.rejected_429} answered 429; tiers {self.tiers}; "
            f"most requests in any 60 s window {self.max_per_minute}, in any 10 s window {self.max_per_10s} (limit {rpm / 6:g}); rows out of partition order {self.out_of_order}"
        )


def max_in_window(times: list[float], seconds: float) -> int:
    """Most of ``times`` within any half-open window of ``seconds``."""
    ts = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(ts):
        while ts[j] <= t - seconds:
            j += 1
        best = max(best, i - j + 1)
    return best


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on loopback."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def out_of_order(root: Path) -> int:
    """Rows of the ``enriched`` dataset written after a later offset of their partition (by file, then row)."""
    files = sorted((root / "enriched").rglob("*.parquet"))
    frames = [pl.read_parquet(f, columns=["src_topic", "src_partition", "src_offset"]).with_columns(pl.lit(i).alias("_file")) for i, f in enumerate(files)]
    if not frames:
        return 0
    df = pl.concat(frames).with_row_index("_row")
    # within a partition, files must not interleave and rows must rise: compare each row with the running maximum
    df = df.sort(["src_topic", "src_partition", "_file", "_row"])
    prev_max = pl.col("src_offset").cum_max().shift(1).over(["src_topic", "src_partition"])
    return int(df.select((pl.col("src_offset") < prev_max).sum()).item() or 0)


def drain_at_limit(
    bootstrap: str, topic: str, workdir: Path, *, events: int, rpm: float, processes: int = 1, partitions: int = 4, latency_ms: float = 20.0, burst_s: float = 1.0
) -> DrainFigures:
    """Produce a burst of ``events``, then drain it through ``processes`` flow processes against
    a provider limited to ``rpm`` requests per minute (a bucket of ``burst_s`` seconds' worth),
    driftline configured at ``rpm``."""
    produce(bootstrap, topic, events, seed=19, invalid_rate=0.0, pii_rate=0.0, partitions=partitions, progress=False)
    log_path = workdir / "requests.jsonl"
    server, base_url = start_subprocess("--port", "0", "--log", str(log_path), "--latency-ms", str(latency_ms), "--rpm", str(rpm), "--rpm-burst", str(max(1.0, rpm / 60.0 * burst_s)))
    root = workdir / "out"
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
        "sinks": {"root": str(root)},
        "models": {
            "chain": ["primary", "local", "rules"],
            "backends": {
                "primary": {"kind": "openai", "base_url": base_url, "model": "test-model", "timeout_s": 10, "max_in_flight": 16, "rate_limit": {"requests_per_minute": rpm}},
                "local": {"kind": "local"},
                "rules": {"kind": "rules"},
            },
            "cache": {"enabled": False},  # synthetic texts repeat: every event must reach the provider
            "ledger": {"path": str(workdir / "ledger.sqlite")},  # shared by the processes: the limiter lives in it
            "batching": {"max_rows": 64, "max_wait_ms": 100},
        },
    }
    cfg_path = workdir / "driftline.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    addresses = ",".join(f"127.0.0.1:{p}" for p in free_ports(processes))
    procs = []
    try:
        start = time.monotonic()
        for i in range(processes):
            with open(workdir / f"flow{i}.log", "w") as err:
                procs.append(subprocess.Popen([sys.executable, "-c", _PROCESS, str(cfg_path), addresses, str(i)], env=env, stdout=subprocess.DEVNULL, stderr=err))
        for p in procs:
            if p.wait(timeout=3600) != 0:
                raise RuntimeError(f"flow process failed: {(workdir / f'flow{procs.index(p)}.log').read_text()[-2000:]}")
        took = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        server.terminate()
        server.wait(timeout=30)
    log = read_log(log_path)
    rows = pl.read_parquet(str(root / "enriched" / "**" / "*.parquet"), columns=["event_id", "model_tier"])
    arrivals = [e["t"] for e in log]
    return DrainFigures(
        events=events,
        rows=rows.height,
        seconds=took,
        implied_seconds=(len(log) - 1) * 60.0 / rpm,
        requests=len(log),
        rejected_429=sum(1 for e in log if e["status"] == 429),
        tiers=dict(sorted(rows.group_by("model_tier").len().rows())),
        max_per_minute=max_in_window(arrivals, 60.0),
        max_per_10s=max_in_window(arrivals, 10.0),
        out_of_order=out_of_order(root),
    )
