"""``driftline kafka start|stop|status``: the local development broker(s).

Every bundled broker keeps its state in ``$DRIFTLINE_HOME/kafka-<port>``; ``status``
without ``--port`` lists all of them (the demo may have started one on a free port),
``stop --all`` stops every one that runs.
"""

from __future__ import annotations

import argparse
import sys

from driftline.broker import DEFAULT_PORT, BrokerError, BrokerStatus, LocalKafka, bundled_brokers
from driftline.config import state_home

NAME = "kafka"
HELP = "start, stop or inspect the local single-node Kafka broker (KRaft, from Maven Central jars)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--port", type=int, default=None, help=f"client port (start/stop default {DEFAULT_PORT}; status default: every bundled broker); the controller uses port+1")
    parser.add_argument("--all", action="store_true", help="stop: every bundled broker under $DRIFTLINE_HOME")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for start-up")


def status_table(statuses: list[BrokerStatus]) -> list[str]:
    """One line per bundled broker: port, pid, state, log file."""
    lines = [f"{'port':>6}  {'pid':>8}  {'state':<8}  log"]
    for st in statuses:
        lines.append(f"{st.port:>6}  {st.pid if st.pid is not None else '-':>8}  {st.state:<8}  {st.log_file}")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.all and (args.action != "stop" or args.port is not None):
        print("driftline kafka: --all goes with stop and without --port", file=sys.stderr)
        return 2
    try:
        if args.action == "status" and args.port is None:
            return _status_all()
        if args.all:
            stopped = [b.port for b in bundled_brokers() if b.stop()]
            print(f"kafka stopped on port(s) {', '.join(map(str, stopped))}" if stopped else "no bundled broker was running")
            return 0
        broker = LocalKafka(port=args.port or DEFAULT_PORT)
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


def _status_all() -> int:
    """Exit code 0 when at least one bundled broker runs, else 3."""
    statuses = [b.status() for b in bundled_brokers()]
    if not statuses:
        print(f"no bundled broker has been started from here ({state_home()})")
        return 3
    print(f"bundled brokers in {state_home()}:")
    print("\n".join(status_table(statuses)))
    return 0 if any(st.running for st in statuses) else 3
