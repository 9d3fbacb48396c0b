"""``driftline verify``: check every dataset against its manifest.

Exit status 0 when no problem is found (warnings about interrupted commits allowed),
1 when any problem is found.  ``--json`` prints a machine-readable report.
"""

from __future__ import annotations

import argparse
import json
import sys

from driftline.config import load_config
from driftline.progress import bar
from driftline.sinks.parquet.store import open_store
from driftline.sinks.parquet.verify import discover_datasets, verify_dataset

NAME = "verify"
HELP = "check the Parquet datasets against their manifests (checksums, unknown/missing files, duplicate keys)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="dataset root (default: sinks.root of the configuration)")
    parser.add_argument("--dataset", action="append", default=None, help="check only this dataset (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--repair", action="store_true", help="first finish interrupted commits and remove orphan temps (run only while the pipeline is stopped)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    root = args.root or cfg.sinks.root
    store = open_store(root, cfg.sinks.fsspec_options(), fsync=cfg.sinks.fsync)
    names = args.dataset or discover_datasets(store)
    reports = []
    with bar(desc="verify", unit="file") as progress:
        for n in names:
            progress.set_postfix_str(n)
            reports.append(verify_dataset(store, n, repair=args.repair, on_file=progress.update))
    ok = all(r.ok for r in reports)
    if args.json:
        print(json.dumps({"root": root, "ok": ok, "datasets": [r.to_dict() for r in reports]}, indent=2))
    else:
        if not reports:
            print(f"no datasets under {root}")
        for r in reports:
            status = "OK" if r.ok else f"{len(r.problems)} PROBLEM(S)"
            retired = f", {r.retired} replaced by compaction" if r.retired else ""
            print(f"{r.name}: {status} — {r.commits} commits, {r.files} files, {r.rows} rows, {r.bytes} bytes{retired}")
            for f in r.problems:
                print(f"  problem {f.kind}: {f.path}: {f.detail}")
            for f in r.warnings:
                print(f"  warning {f.kind}: {f.path}: {f.detail}")
        print("verify: OK" if ok else "verify: PROBLEMS FOUND", file=sys.stderr)
    return 0 if ok else 1
