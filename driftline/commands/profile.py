"""``driftline profile``: build a drift reference profile from historical Parquet data.

Reads rows of the ``enriched`` (or ``telemetry``) dataset, summarizes them per key
(``monitoring.key_dims``) and for all keys together (``*``), and writes the JSON profile
that ``monitoring.drift.reference: profile`` with ``profile_path`` loads.  Bins are cut at
the reference's quantiles once, here.

    driftline profile --input 'var/output/enriched/**/*.parquet' --output var/reference.json
"""

from __future__ import annotations

import argparse
import glob
import sys
from datetime import datetime

import polars as pl

from driftline.config import load_config
from driftline.progress import bar
from driftline.operators.aggregate import WindowAccumulator, key_string, slice_frame
from driftline.operators.drift import monitored_features, profile_from_accumulators

NAME = "profile"
HELP = "build a drift reference profile (fixed bins and counts per key) from historical Parquet data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", action="append", required=True, help="Parquet file or glob (repeatable), e.g. var/output/enriched/**/*.parquet")
    parser.add_argument("--output", "-o", required=True, help="profile JSON file to write")
    parser.add_argument("--since", default=None, help="only rows with event_time >= this ISO-8601 instant")
    parser.add_argument("--until", default=None, help="only rows with event_time < this ISO-8601 instant")
    parser.add_argument("--batch-rows", type=int, default=200_000, help="rows summarized per step (bounds memory)")


def _instant(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"driftline profile: {flag} {text!r} is not an ISO-8601 instant") from None
    if dt.tzinfo is None:
        raise SystemExit(f"driftline profile: {flag} {text!r} needs a UTC offset")
    return dt


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    m = cfg.monitoring
    files = sorted({f for pattern in args.input for f in glob.glob(pattern, recursive=True)})
    if not files:
        print(f"driftline profile: no Parquet file matches {args.input}; check --input (the enrich flow writes under sinks.root)", file=sys.stderr)
        return 1
    tcol = m.columns.event_time
    lf = pl.scan_parquet(files)
    since, until = _instant(args.since, "--since"), _instant(args.until, "--until")
    if since is not None:
        lf = lf.filter(pl.col(tcol) >= since)
    if until is not None:
        lf = lf.filter(pl.col(tcol) < until)
    have = set(lf.collect_schema().names())
    wanted = {tcol, m.columns.event_id, *(m.columns.model_dump().values()), *m.key_dims, *(f.name for f in monitored_features(m))}
    lf = lf.select([c for c in wanted if isinstance(c, str) and c in have])
    accs: dict[str, WindowAccumulator] = {}
    rows = 0
    frame = lf.collect()
    progress = bar(total=frame.height, desc="profile", unit="row", unit_scale=True)
    for batch in frame.iter_slices(args.batch_rows):
        rows += batch.height
        progress.update(batch.height)
        for s in slice_frame(batch, m):
            for k in (key_string(m, s.key), "*"):
                if k in accs:
                    accs[k].merge(s.acc)
                else:
                    accs[k] = s.acc.copy()
    progress.close()
    if not rows:
        print("driftline profile: the selected data holds no rows; widen --since/--until or choose other --input files", file=sys.stderr)
        return 1
    prof = profile_from_accumulators(accs, m, sources=files, rows=rows)
    prof.save(args.output)
    print(f"profile written to {args.output}: {rows} rows, {len(accs) - 1} keys, features {sorted(prof.profiles['*'].features)}")
    return 0
