"""Arrival-to-commit gap of the Parquet sink at a steady event rate, on the real broker.

Starts ``driftline run enrich`` (tailing, not drained) as a subprocess, waits until it
has committed a warm-up batch, produces events at a steady rate (default 100/s for
60 s), waits for the last time-based flush, stops the flow, and prints for every
measured row the gap between its Kafka timestamp and the commit time of its file
(the manifest entry's ``created_at``).  The target is ``max < flush_seconds + 2 s``.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 .venv/bin/python bench/bench_sink_latency.py --rate 100 --seconds 60

Without ``KAFKA_BOOTSTRAP_SERVERS`` a local broker is started (driftline.broker.LocalKafka).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import polars as pl

from driftline.producer import produce
from driftline.sinks.parquet import load_entries, open_store


def commit_gaps(root: Path, since_ms: int) -> pl.DataFrame:
    store = open_store(str(root))
    frames = []
    for name in ("enriched", "rejected"):
        for e in load_entries(store, name):
            committed_ms = int(datetime.fromisoformat(e.created_at).timestamp() * 1000)
            for f in e.files:
                df = pl.read_parquet(str(root / name / f.path), columns=["src_timestamp"])
                frames.append(df.select((pl.lit(committed_ms) - pl.col("src_timestamp").dt.epoch("ms")).alias("gap_ms"), pl.col("src_timestamp").dt.epoch("ms").alias("ts")))
    all_rows = pl.concat(frames) if frames else pl.DataFrame({"gap_ms": [], "ts": []})
    return all_rows.filter(pl.col("ts") >= since_ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="events per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of the steady phase")
    ap.add_argument("--flush-seconds", type=float, default=10.0, help="sinks.flush_seconds of the flow")
    args = ap.parse_args()

    with ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            from driftline.broker import LocalKafka

            broker = LocalKafka(port=int(os.environ.get("DRIFTLINE_BENCH_KAFKA_PORT", "19192")), state_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())))
            broker.start(timeout=120)
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sink-")))
        root = work / "out"
        topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
        produce(bootstrap, topic, 10, seed=1, invalid_rate=0.0, pii_rate=0.0, progress=False)  # create the topic, warm up
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
        env.update(
            {
                "DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                "DRIFTLINE__KAFKA__INPUT_TOPIC": topic,
                "DRIFTLINE__KAFKA__DEAD_LETTER_TOPIC": f"{topic}.dlq",
                "DRIFTLINE__KAFKA__OUTPUT_TOPIC": f"{topic}.out",
                "DRIFTLINE__SINKS__ROOT": str(root),
                "DRIFTLINE__SINKS__FLUSH_SECONDS": str(args.flush_seconds),
            }
        )
        cmd = [sys.executable, "-m", "driftline.cli", "run", "enrich", "--recovery-dir", str(work / "recovery"), "--log-level", "WARNING"]
        flow = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not list((root / "enriched" / "_manifest").glob("*.json")) if (root / "enriched" / "_manifest").is_dir() else True:
                if flow.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"flow did not start: {flow.stderr.read()[-2000:] if flow.stderr else ''}")
                time.sleep(0.2)
            start_ms = int(time.time() * 1000)
            n = int(args.rate * args.seconds)
            produce(bootstrap, topic, n, seed=2, rate=args.rate, invalid_rate=0.05, pii_rate=0.0, progress=False)
            time.sleep(args.flush_seconds + 5)
        finally:
            flow.send_signal(signal.SIGINT)
            try:
                flow.wait(timeout=30)
            except subprocess.TimeoutExpired:
                flow.kill()
        gaps = commit_gaps(root, start_ms)["gap_ms"].cast(pl.Float64) / 1000.0
        bound = args.flush_seconds + 2.0
        print(f"rate={args.rate:g}/s duration={args.seconds:g}s flush_seconds={args.flush_seconds:g} events_produced={n} rows_measured={gaps.len()}")
        if gaps.len() == 0:
            print("no committed rows measured")
            return 1
        print(
            f"arrival->commit gap seconds: p50={gaps.quantile(0.5):.3f} p99={gaps.quantile(0.99):.3f} max={gaps.max():.3f} min={gaps.min():.3f} "
            f"(bound {bound:g}s: {'OK' if gaps.max() < bound else 'EXCEEDED'})"
        )
        print(f"host: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} (figures measured under contention when the load exceeds the cpus)")
        return 0 if gaps.max() < bound and gaps.len() >= n * 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
