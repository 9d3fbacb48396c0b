"""``driftline demo``: local broker, synthetic events, the enrich flow until drained,
and a summary of what was written where."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from driftline.config import load_config
from driftline.logs import configure_logging

NAME = "demo"
HELP = "start the local broker, produce events, run the enrich flow until drained, print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--invalid-rate", type=float, default=0.05)
    parser.add_argument("--pii-rate", type=float, default=0.2)
    parser.add_argument("--out", default="var/demo", help="parent folder for this run's output")
    parser.add_argument("--port", type=int, default=9092, help="local broker port")
    parser.add_argument("--bootstrap", default=None, help="use this running broker instead of starting the local one")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def count_rows(root: Path, dataset: str) -> tuple[int, int]:
    """(rows, files) committed to ``dataset``, from its manifest."""
    from driftline.sinks.parquet import load_entries, open_store

    files = [f for entry in load_entries(open_store(str(root)), dataset) for f in entry.files]
    return sum(f.rows for f in files), len(files)


def run(args: argparse.Namespace) -> int:
    from driftline.broker import LocalKafka
    from driftline.flows.enrich import build_enrich_flow
    from driftline.producer import produce
    from driftline.runner import run_flow

    configure_logging("WARNING")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(args.out).resolve() / stamp
    topic = f"demo-{stamp}"
    bootstrap = args.bootstrap or LocalKafka(port=args.port).start()
    cfg = load_config(
        args.config,
        overrides={
            "kafka": {"bootstrap_servers": bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.enriched"},
            "sinks": {"root": str(out / "datasets")},
        },
    )
    t0 = time.monotonic()
    sent = produce(bootstrap, topic, args.events, seed=args.seed, invalid_rate=args.invalid_rate, pii_rate=args.pii_rate, progress=sys.stderr.isatty() and not args.json)
    produce_s = time.monotonic() - t0
    flow_s = run_flow(build_enrich_flow(cfg, drain=True, state_dir=out / "recovery"), recovery_dir=out / "recovery", epoch_interval=5.0)
    datasets: dict[str, Any] = {}
    root = out / "datasets"
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        rows, files = count_rows(root, d.name)
        datasets[d.name] = {"rows": rows, "files": files, "path": str(d)}
    summary = {
        "events_produced": len(sent),
        "malformed_produced": sum(1 for e in sent if e.defect),
        "rows_written": {k: v["rows"] for k, v in datasets.items()},
        "files_written": {k: v["files"] for k, v in datasets.items()},
        "rows_rejected": datasets.get("rejected", {}).get("rows", 0),
        "topics": {"input": topic, "dead_letter": cfg.kafka.dead_letter_topic, "output": cfg.kafka.output_topic},
        "seconds": round(flow_s, 3),
        "produce_seconds": round(produce_s, 3),
        "events_per_second": round(len(sent) / flow_s, 1) if flow_s > 0 else None,
        "output_folder": str(root),
        "bootstrap": bootstrap,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"\ndriftline demo: {summary['events_produced']} events ({summary['malformed_produced']} malformed) -> topic {topic} on {bootstrap}")
    print(f"flow drained in {summary['seconds']} s ({summary['events_per_second']} events/s)\n")
    print(f"{'dataset':<12} {'rows':>8} {'files':>6}  path")
    for name, info in datasets.items():
        print(f"{name:<12} {info['rows']:>8} {info['files']:>6}  {info['path']}")
    print(f"\ndead-letter topic: {cfg.kafka.dead_letter_topic}   output topic: {cfg.kafka.output_topic}")
    print(f"query it:  driftline query --root {root} \"SELECT source, count(*) FROM enriched GROUP BY 1\"")
    return 0
