"""``driftline query "SQL"``: DuckDB over the datasets, one view per dataset name.

Each view reads the dataset's *live* files, taken from its manifest (committed, not
replaced by a compaction), with Hive partitioning, so filters on ``date`` and ``hour``
prune whole folders.  A view never shows a half-written file, nor a row twice while a
compaction's retired files wait for their vacuum.  A folder without a manifest is read
as ``<root>/<name>/**/*.parquet``.

    driftline query "SELECT date, count(*) FROM enriched GROUP BY date ORDER BY date"
"""

from __future__ import annotations

import argparse
import sys

import duckdb
import polars as pl

from driftline.config import load_config
from driftline.sinks.parquet.manifest import MANIFEST_DIR, live_files
from driftline.sinks.parquet.store import FsspecStore, open_store
from driftline.sinks.parquet.verify import discover_datasets

HIVE_TYPES = {"date": "DATE", "hour": "INTEGER"}

NAME = "query"
HELP = "run DuckDB SQL over the Parquet datasets (a view per dataset: enriched, rejected, metrics, ...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", help='SQL text, e.g. "SELECT count(*) FROM enriched"')
    parser.add_argument("--root", default=None, help="dataset root (default: sinks.root of the configuration)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (json: one object per line)")
    parser.add_argument("--max-rows", type=int, default=100, help="rows shown in table format (default 100)")


def connect(root: str, storage_options: dict[str, str] | None = None) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB connection with a view per non-empty dataset under ``root``."""
    store = open_store(root, storage_options)
    con = duckdb.connect()
    if isinstance(store, FsspecStore):
        con.register_filesystem(store.fs)
    views = []
    for name in discover_datasets(store):
        if MANIFEST_DIR in store.list_dirs(name):
            files = live_files(store, name)
            source = [store.uri(p) for p in files]
        else:
            files = [p for p in store.list_files(name) if p.endswith(".parquet")]
            source = [store.uri(f"{name}/**/*.parquet")]
        if not files:
            continue
        fields = [seg.split("=", 1)[0] for seg in files[0][len(name) + 1 :].split("/")[:-1] if "=" in seg]
        types = ", ".join(f"'{f}': {HIVE_TYPES[f]}" for f in fields if f in HIVE_TYPES)
        listed = ", ".join("'" + s.replace("'", "''") + "'" for s in source)
        con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true, union_by_name = true, hive_types = {{{types}}})")
        views.append(name)
    return con, views


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    root = args.root or cfg.sinks.root
    con, views = connect(root, cfg.sinks.fsspec_options())
    try:
        rel = con.sql(args.sql)
    except duckdb.Error as exc:
        print(f"driftline query: {exc}\n(views: {', '.join(views) or 'none — no committed files under ' + root})", file=sys.stderr)
        return 2
    if rel is None:
        return 0
    df = pl.from_arrow(rel.to_arrow_table())
    assert isinstance(df, pl.DataFrame)
    if args.format == "csv":
        sys.stdout.write(df.write_csv())
    elif args.format == "json":
        sys.stdout.write(df.write_ndjson())
    else:
        with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            print(df)
    return 0
