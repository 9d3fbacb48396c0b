"""``driftline compact``: merge small committed Parquet files into files of about
``sinks.row_group_rows`` rows, then vacuum the replaced files after a retention period.

Safe while the flow runs and at any kill point: new files are committed with the sinks'
protocol and the replaced ones are *retired* in the manifest, never changed; re-running
after a crash finishes the interrupted commit (see docs/datasets.md, *Compaction*).

    driftline compact --dataset enriched --older-than 1h --retention 1h
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from driftline.config import load_config
from driftline.progress import bar
from driftline.sinks.parquet.compact import compact_dataset
from driftline.sinks.parquet.manifest import ManifestError
from driftline.sinks.parquet.store import open_store
from driftline.sinks.parquet.verify import discover_datasets
from driftline.timeargs import parse_duration

NAME = "compact"
HELP = "merge small committed Parquet files of each partition (crash-safe, while the flow runs) and vacuum replaced files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="dataset root (default: sinks.root of the configuration)")
    parser.add_argument("--dataset", action="append", default=None, help="compact only this dataset (repeatable; default: every dataset)")
    parser.add_argument("--older-than", type=parse_duration, default=parse_duration("1h"), help="only files committed at least this long ago (default 1h; 0 for all)")
    parser.add_argument(
        "--retention", type=parse_duration, default=parse_duration("1h"), help="remove replaced files this long after their compaction (default 1h; readers still using them finish first)"
    )
    parser.add_argument("--target-rows", type=int, default=None, help="rows per merged file (default: sinks.row_group_rows)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    root = args.root or cfg.sinks.root
    store = open_store(root, cfg.sinks.fsspec_options(), fsync=cfg.sinks.fsync)
    names = args.dataset or discover_datasets(store)
    target = args.target_rows or cfg.sinks.row_group_rows
    if target < 2:
        print("driftline compact: --target-rows must be at least 2", file=sys.stderr)
        return 2
    results = []
    with bar(desc="compact", unit="file") as progress:
        for name in names:
            progress.set_postfix_str(name)
            try:
                results.append(
                    compact_dataset(
                        store,
                        name,
                        target_rows=target,
                        older_than=args.older_than,
                        retention=args.retention,
                        compression_level=cfg.sinks.compression_level,
                        on_file=progress.update,
                    )
                )
            except ManifestError as exc:
                print(f"driftline compact: {exc}", file=sys.stderr)
                return 1
    status = 1 if any(r.skipped_corrupt for r in results) else 0
    if args.json:
        print(json.dumps({"root": root, "datasets": [asdict(r) for r in results]}, indent=2))
        return status
    if not results:
        print(f"no datasets under {root}")
    for r in results:
        merged = f"{r.retired} merged into {r.files_after - r.files_before + r.retired}, {r.rows} rows, {r.commits} commits" if r.retired else "nothing to merge"
        line = f"{r.dataset}: {r.files_before} -> {r.files_after} files ({merged})"
        extras = [f"{r.vacuumed} replaced files vacuumed"] if r.vacuumed else []
        if r.skipped_young:
            extras.append(f"{r.skipped_young} small files younger than --older-than left")
        if r.rolled_forward:
            extras.append(f"{r.rolled_forward} files of an interrupted compaction published")
        if r.skipped_corrupt:
            extras.append(f"SKIPPED {len(r.skipped_corrupt)} group(s) with a file failing its checksum (run driftline verify)")
        print(line + ("; " + "; ".join(extras) if extras else ""))
    return status
