"""``driftline produce``: synthetic support tickets and reviews to a topic."""

from __future__ import annotations

import argparse
import sys

from driftline.broker import require_kafka
from driftline.config import load_config
from driftline.producer import produce

NAME = "produce"
HELP = "write synthetic events (tickets, reviews; several languages; optional PII and malformed records) to a topic"


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", default=None, help="target topic (default: kafka.input_topic)")
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same events")
    parser.add_argument("--invalid-rate", type=_rate, default=0.0, help="share of malformed records")
    parser.add_argument("--pii-rate", type=_rate, default=0.1, help="share of events carrying PII")
    parser.add_argument("--format", choices=("json", "avro"), default="json", dest="payload_format")
    parser.add_argument("--partitions", type=int, default=3, help="partitions if the topic is created")
    parser.add_argument("--bootstrap", default=None, help="override kafka.bootstrap_servers")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.events < 0:
        print("driftline produce: --events must be >= 0", file=sys.stderr)
        return 2
    require_kafka(cfg.kafka, bootstrap_servers=args.bootstrap)
    sent = produce(
        args.bootstrap or cfg.kafka.bootstrap_servers,
        args.topic or cfg.kafka.input_topic,
        args.events,
        seed=args.seed,
        rate=args.rate,
        invalid_rate=args.invalid_rate,
        pii_rate=args.pii_rate,
        payload_format=args.payload_format,
        partitions=args.partitions,
        progress=sys.stderr.isatty(),
        extra_config=cfg.kafka.client_config(bootstrap_servers=args.bootstrap),
    )
    malformed = sum(1 for e in sent if e.defect)
    print(f"produced {len(sent)} events to {args.topic or cfg.kafka.input_topic} ({malformed} malformed, {sum(1 for e in sent if e.pii)} with PII)")
    return 0
