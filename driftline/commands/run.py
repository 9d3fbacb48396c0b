"""``driftline run enrich|monitor``: run a flow against Kafka."""

from __future__ import annotations

import argparse
import importlib

from driftline.broker import require_kafka
from driftline.config import load_config
from driftline.metrics import serve_metrics
from driftline.runner import run_flow

NAME = "run"
HELP = "run a flow (enrich: text events; monitor: model-call telemetry)"

FLOWS = {"enrich": ("driftline.flows.enrich", "build_enrich_flow"), "monitor": ("driftline.flows.monitor", "build_monitor_flow")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("flow", choices=sorted(FLOWS))
    parser.add_argument("--drain", action="store_true", help="stop at the end of the input topic (demos, tests, backfills) instead of tailing forever")
    parser.add_argument("--recovery-dir", default=None, help="Bytewax recovery folder; resume from it after a crash (created on first use)")
    parser.add_argument("--epoch-interval", type=float, default=10.0, help="seconds between recovery snapshots (default 10)")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port (0: off)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    require_kafka(cfg.kafka)  # a wrong password or address fails here, not as a silent retry loop
    if args.metrics_port:
        serve_metrics(args.metrics_port)
    module_name, builder = FLOWS[args.flow]
    kwargs = {"state_dir": args.recovery_dir} if args.flow == "enrich" else {}
    flow = getattr(importlib.import_module(module_name), builder)(cfg, drain=args.drain, **kwargs)
    run_flow(flow, recovery_dir=args.recovery_dir, epoch_interval=args.epoch_interval)
    return 0
