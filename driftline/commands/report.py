"""``driftline report``: one self-contained HTML file of plots and a summary of the datasets.

    driftline report --root var/output --since 2026-03-01T00:00Z -o report.html

The page loads nothing at view time (inline SVG, inline CSS, no script); see
docs/report.md for what each plot shows.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from driftline.config import load_config
from driftline.progress import bar
from driftline.timeargs import parse_instant

NAME = "report"
HELP = "write a self-contained HTML report (events, refusals, PII, latency, tiers, cost, drift, alerts) from the datasets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="dataset root (default: sinks.root of the configuration)")
    parser.add_argument("--since", type=parse_instant, default=None, help="only rows at or after this instant (ISO-8601 with offset, or e.g. 2h for two hours ago)")
    parser.add_argument("--until", type=parse_instant, default=None, help="only rows before this instant")
    parser.add_argument("--output", "-o", default="report.html", help="HTML file to write (default report.html)")


def write_report(root: str, output: str | Path, *, storage_options: dict[str, str] | None = None, since: datetime | None = None, until: datetime | None = None) -> Path:
    """Build the report of ``root`` into ``output``; returns the file's path."""
    from driftline.report import build_report

    with bar(total=8, desc="report", unit="plot") as progress:
        page, _plots = build_report(root, storage_options=storage_options, since=since, until=until, on_step=lambda s: (progress.set_postfix_str(s), progress.update(1)))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    root = args.root or cfg.sinks.root
    if args.since and args.until and args.since >= args.until:
        print(f"driftline report: --since {args.since.isoformat()} is not before --until {args.until.isoformat()}", file=sys.stderr)
        return 2
    out = write_report(root, args.output, storage_options=cfg.sinks.fsspec_options(), since=args.since, until=args.until)
    print(f"report written to {out.resolve()} ({out.stat().st_size // 1024} KiB)")
    return 0
