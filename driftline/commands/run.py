"""``driftline run enrich|monitor``: run a flow against Kafka, or backfill a range.

``--from-time/--to-time`` (Kafka timestamps) or ``--from-offset/--to-offset`` make the
enrich flow read only that range of every input partition and stop (see
docs/running.md, *Backfill*); a drained run or a backfill shows a progress bar with an
ETA on a terminal.

Scaling (docs/running.md, *Scaling*) takes Bytewax's own options and environment
variables: ``-w/--workers-per-process``, ``-i/--process-id`` and ``-a/--addresses`` (or
``BYTEWAX_POD_NAME``/``BYTEWAX_STATEFULSET_NAME`` and ``BYTEWAX_HOSTFILE_PATH``, as
``python -m bytewax.run`` reads them); ``--processes P`` starts P local processes on
loopback addresses and supervises them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from driftline.backfill import DrainProgress, OffsetRange
from driftline.broker import require_kafka
from driftline.config import PipelineConfig, load_config
from driftline.heap import ENV_HEAP_TRIM, TRIM_INTERVAL_S
from driftline.metrics import HEALTH, parse_addr, serve_metrics
from driftline.runner import ENV_SUPERVISED, Cluster, ClusterError, ensure_recovery_dir, run_flow, supervise
from driftline.timeargs import parse_instant

if TYPE_CHECKING:
    from driftline.flows.enrich import EnrichIO

NAME = "run"
HELP = "run a flow (enrich: text events; monitor: model-call telemetry)"

METRICS_ADDR = "127.0.0.1"
FLOWS = {"enrich": ("driftline.flows.enrich", "build_enrich_flow"), "monitor": ("driftline.flows.monitor", "build_monitor_flow")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("flow", choices=sorted(FLOWS))
    parser.add_argument("--drain", action="store_true", help="stop at the end of the input topic (demos, tests, backfills) instead of tailing forever")
    parser.add_argument("--recovery-dir", default=None, help="Bytewax recovery folder; resume from it after a crash (created on first use)")
    parser.add_argument("--epoch-interval", type=float, default=10.0, help="seconds between recovery snapshots (default 10)")
    parser.add_argument(
        "--heap-trim-interval",
        type=float,
        default=os.environ.get(ENV_HEAP_TRIM, repr(TRIM_INTERVAL_S)),  # argparse applies type to a string default
        help=f"seconds between two returns of the C heap's free memory to the system (0: never) [env: {ENV_HEAP_TRIM}] (default {TRIM_INTERVAL_S:g}; see driftline/heap.py)",
    )
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics, /healthz and /readyz on this port (0: off)")
    parser.add_argument(
        "--metrics-addr",
        default=METRICS_ADDR,
        help=f"bind address of the metrics endpoint: host or host:port (default {METRICS_ADDR}; 0.0.0.0 or [::] to be scraped from other hosts, e.g. in a container)",
    )
    scaling = parser.add_argument_group(
        "scaling (Bytewax's options and environment variables)", "workers in this process, or one process of a cluster (-i/-a), or --processes local processes"
    )
    scaling.add_argument("-w", "--workers-per-process", type=int, default=None, help="worker threads in each process [env: BYTEWAX_WORKERS_PER_PROCESS] (default 1)")
    scaling.add_argument("-i", "--process-id", type=int, default=None, help="this process's index in --addresses [env: BYTEWAX_PROCESS_ID, or the ordinal of BYTEWAX_POD_NAME in BYTEWAX_STATEFULSET_NAME]")
    scaling.add_argument("-a", "--addresses", default=None, help="host:port of every process, ';'-separated, the same list for all [env: BYTEWAX_ADDRESSES, or one per line in BYTEWAX_HOSTFILE_PATH]")
    scaling.add_argument("--processes", type=int, default=None, help="start this many local processes on loopback addresses and supervise them (a failure stops all; SIGTERM/SIGINT reach all)")
    backfill = parser.add_argument_group("backfill (enrich): read only a range of every input partition, then stop")
    backfill.add_argument("--from-time", type=parse_instant, default=None, help="first record with a Kafka timestamp at or after this instant (ISO-8601, or e.g. 2h)")
    backfill.add_argument("--to-time", type=parse_instant, default=None, help="stop before the first record with a Kafka timestamp at or after this instant")
    backfill.add_argument("--from-offset", type=int, default=None, help="first offset to read in every partition")
    backfill.add_argument("--to-offset", type=int, default=None, help="stop before this offset in every partition")


def _backfill_io(cfg: PipelineConfig, args: argparse.Namespace) -> tuple[EnrichIO, OffsetRange]:
    """The enrich flow's I/O with a source bounded to the requested range, and the range."""
    from driftline.backfill import offset_gaps, resolve_range
    from driftline.flows.enrich import kafka_io
    from driftline.kafka_io import MicroBatchKafkaSource
    from driftline.sinks.parquet.manifest import kafka_watermarks, load_entries
    from driftline.sinks.parquet.store import open_store

    k = cfg.kafka
    conf = k.client_config()
    rng = resolve_range(conf, k.input_topic, from_time=args.from_time, to_time=args.to_time, from_offset=args.from_offset, to_offset=args.to_offset)
    store = open_store(cfg.sinks.root, cfg.sinks.fsspec_options(), fsync=cfg.sinks.fsync)
    wm: dict[tuple[str, int], int] = {}
    for ds in ("enriched", "rejected"):  # every offset lands in one of the two
        for tp, hi in kafka_watermarks(load_entries(store, ds)).items():
            wm[tp] = max(wm.get(tp, -1), hi)
    for gap in offset_gaps(rng, wm):
        print(f"driftline run: warning: {gap} were never committed under {cfg.sinks.root}; a later run on this root will treat them as committed (backfill into its own sinks.root)", file=sys.stderr)
    source = MicroBatchKafkaSource.from_config(k, [k.input_topic], drain=True, start_offsets={(rng.topic, p): o for p, o in rng.start.items()}, stop_offsets={(rng.topic, p): o for p, o in rng.stop.items()})
    return replace(kafka_io(cfg, drain=True), source=source), rng


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    require_kafka(cfg.kafka)  # a wrong password or address fails here, not as a silent retry loop
    bounded = any(v is not None for v in (args.from_time, args.to_time, args.from_offset, args.to_offset))
    if bounded and args.flow != "enrich":
        print("driftline run: --from-*/--to-* backfill the enrich flow only", file=sys.stderr)
        return 2
    if (args.from_time is not None and args.from_offset is not None) or (args.to_time is not None and args.to_offset is not None):
        print("driftline run: give a time or an offset for each bound, not both", file=sys.stderr)
        return 2
    if args.from_time is not None and args.to_time is not None and args.from_time >= args.to_time:
        print(f"driftline run: --from-time {args.from_time.isoformat()} is not before --to-time {args.to_time.isoformat()}", file=sys.stderr)
        return 2
    supervised = os.environ.get(ENV_SUPERVISED) == "1"
    try:
        if args.processes is not None and not supervised:
            return _supervise(cfg, args)
        cluster = Cluster.resolve(workers_per_process=args.workers_per_process, process_id=args.process_id, addresses=args.addresses)
    except ClusterError as exc:
        print(f"driftline run: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port or args.metrics_addr != METRICS_ADDR:
        try:
            host, port = parse_addr(args.metrics_addr, args.metrics_port or None)
            serve_metrics(port + (cluster.process_id if supervised and port else 0), host)
        except (ValueError, OSError) as exc:
            print(f"driftline run: cannot serve metrics on {args.metrics_addr} (port {args.metrics_port}): {exc}", file=sys.stderr)
            return 2
    module_name, builder = FLOWS[args.flow]
    kwargs: dict = {"state_dir": args.recovery_dir}  # both flows: the ledger (enrich) and windows open at the end travel with it
    total, desc = None, f"{args.flow}"
    if bounded:
        try:
            kwargs["io"], rng = _backfill_io(cfg, args)
        except LookupError as exc:
            print(f"driftline run: {exc}", file=sys.stderr)
            return 2
        total, desc = rng.total, f"backfill {rng.topic}"
    flow = getattr(importlib.import_module(module_name), builder)(cfg, drain=args.drain or bounded, **kwargs)
    run = lambda: run_flow(flow, recovery_dir=args.recovery_dir, epoch_interval=args.epoch_interval, cluster=cluster, partitions=cfg.recovery.partitions, heap_trim_interval=args.heap_trim_interval)  # noqa: E731
    if (args.drain or bounded) and cluster.processes == 1:  # one process sees every event: a meaningful bar
        with DrainProgress(args.flow, total, desc):
            run()
    else:
        run()
    HEALTH.finish()  # /readyz answers 503 from here on
    return 0


def _supervise(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """``--processes P``: the recovery folder made once, then P processes of one cluster."""
    if args.process_id is not None or args.addresses is not None:
        raise ClusterError("--processes starts local processes with their own ids and addresses: give either --processes or -i/-a")
    if args.processes < 1:
        raise ClusterError(f"--processes must be at least 1, got {args.processes}")
    if args.recovery_dir:  # made here, before any process lists the folder
        ensure_recovery_dir(args.recovery_dir, cfg.recovery.partitions)
    return supervise(_child_argv(args), args.processes)


def _child_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one supervised process: this one's, without ``--processes``
    (``BYTEWAX_WORKERS_PER_PROCESS`` passes through the environment)."""
    argv = ["run", args.flow, "--epoch-interval", repr(args.epoch_interval), "--heap-trim-interval", repr(args.heap_trim_interval), "--log-level", args.log_level]
    for flag, value in (
        ("--workers-per-process", args.workers_per_process),
        ("--config", args.config),
        ("--log-file", args.log_file),
        ("--recovery-dir", args.recovery_dir),
        ("--metrics-port", args.metrics_port or None),
        ("--metrics-addr", args.metrics_addr if args.metrics_addr != METRICS_ADDR else None),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for flag, value in (("--from-time", args.from_time), ("--to-time", args.to_time)):
        if value is not None:
            argv += [flag, value.isoformat()]
    for flag, value in (("--from-offset", args.from_offset), ("--to-offset", args.to_offset)):
        if value is not None:
            argv += [flag, str(value)]
    if args.drain:
        argv.append("--drain")
    return argv
