"""``driftline kafka start|stop|status``: the local development broker."""

from __future__ import annotations

import argparse
import sys

from driftline.broker import BrokerError, LocalKafka

NAME = "kafka"
HELP = "start, stop or inspect the local single-node Kafka broker (KRaft, from Maven Central jars)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--port", type=int, default=9092, help="client port (default 9092); the controller uses port+1")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for start-up")


def run(args: argparse.Namespace) -> int:
    broker = LocalKafka(port=args.port)
    try:
        if args.action == "start":
            already = broker.status().running
            bootstrap = broker.start(timeout=args.timeout)
            print(f"kafka {'already running' if already else 'started'} at {bootstrap} (log: {broker.log_file})")
            return 0
        if args.action == "stop":
            print("kafka stopped" if broker.stop() else "kafka was not running")
            return 0
        st = broker.status()
        print(f"kafka {st}")
        return 0 if st.running else 3
    except BrokerError as exc:
        print(f"driftline kafka {args.action}: {exc}", file=sys.stderr)
        return 1
