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

from driftline.config.sinks import SinksConfig
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


def serve_sink_flow() -> int:
    """``--flow sink``: Kafka source -> decode -> the enriched/rejected Parquet sinks only.

    Isolates the sink's own contribution when later stages are being worked on."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow

    from driftline import __version__
    from driftline.config import load_config
    from driftline.flows.datasets import enriched_spec, rejected_spec
    from driftline.kafka_io import MicroBatchKafkaSource
    from driftline.operators.decode import decode_batch
    from driftline.runner import run_flow
    from driftline.sinks.parquet import ParquetDatasetSink, RunInfo, parquet_output

    cfg = load_config(None)
    k = cfg.kafka
    run_info = RunInfo(__version__, cfg.config_hash(), {})
    flow = Dataflow("bench_sink")
    raw = op.input("kafka_in", flow, MicroBatchKafkaSource(k.bootstrap_servers, [k.input_topic], batch_size=k.poll_batch_size, poll_timeout_ms=k.poll_timeout_ms, idle_tick_ms=k.idle_tick_ms))
    batches = op.map("decode", raw, lambda recs: decode_batch(recs, cfg.decode))
    parquet_output("enriched_parquet", op.map("valid", batches, lambda b: b.valid), ParquetDatasetSink(enriched_spec(cfg), cfg.sinks, run_info=run_info))
    parquet_output("rejected_parquet", op.map("rejected", batches, lambda b: b.rejected), ParquetDatasetSink(rejected_spec(cfg), cfg.sinks, run_info=run_info))
    run_flow(flow, recovery_dir=sys.argv[sys.argv.index("--serve-sink-flow") + 1], epoch_interval=10.0)
    return 0


def main() -> int:
    if "--serve-sink-flow" in sys.argv:
        return serve_sink_flow()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flow", choices=("enrich", "sink"), default="enrich", help="enrich: the full enrich flow; sink: Kafka -> decode -> Parquet sinks only")
    ap.add_argument("--rate", type=float, default=100.0, help="events per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of the steady phase")
    ap.add_argument("--flush-seconds", type=float, default=SinksConfig.model_fields["flush_seconds"].default, help="sinks.flush_seconds of the flow (default: the configuration's, %(default)s)")
    args = ap.parse_args()

    with ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            from driftline.broker import LocalKafka

            broker = LocalKafka(port=int(os.environ.get("DRIFTLINE_BENCH_KAFKA_PORT", "19192")), state_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())))
            broker.start(timeout=120)
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
        work = Path(os.environ["BENCH_KEEP"]) if os.environ.get("BENCH_KEEP") else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sink-")))
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
        if args.flow == "enrich":
            cmd = [sys.executable, "-m", "driftline.cli", "run", "enrich", "--recovery-dir", str(work / "recovery"), "--log-level", os.environ.get("BENCH_LOG_LEVEL", "WARNING")]
        else:
            cmd = [sys.executable, __file__, "--serve-sink-flow", str(work / "recovery")]
        log = open(work / "flow.log", "w")  # noqa: SIM115 - closed with the work folder
        stack.callback(log.close)
        flow = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.monotonic() + 120
            while not list((root / "enriched" / "_manifest").glob("*.json")) if (root / "enriched" / "_manifest").is_dir() else True:
                if flow.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"flow did not start: {(work / 'flow.log').read_text()[-2000:]}")
                time.sleep(0.2)
            start_ms = int(time.time() * 1000)
            n = int(args.rate * args.seconds)
            produce(bootstrap, topic, n, seed=2, rate=args.rate, invalid_rate=0.05, pii_rate=0.0, progress=False)
            time.sleep(args.flush_seconds + 5)
            if flow.poll() is not None:
                raise SystemExit(f"the flow died during the run (exit {flow.returncode}); see the end of its log:\n{(work / 'flow.log').read_text()[-3000:]}")
        finally:
            flow.send_signal(signal.SIGINT)
            try:
                flow.wait(timeout=30)
            except subprocess.TimeoutExpired:
                flow.kill()
        gaps = commit_gaps(root, start_ms)["gap_ms"].cast(pl.Float64) / 1000.0
        bound = args.flush_seconds + 2.0
        print(f"flow={args.flow} rate={args.rate:g}/s duration={args.seconds:g}s flush_seconds={args.flush_seconds:g} events_produced={n} rows_measured={gaps.len()}")
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
