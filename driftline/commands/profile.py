"""``driftline profile``: build a drift reference profile from historical Parquet data.

Reads rows of the ``enriched`` (or ``telemetry``) dataset, summarizes them per key
(``monitoring.key_dims``) and for all keys together (``*``), and writes the JSON profile
that ``monitoring.drift.reference: profile`` with ``profile_path`` loads.

Exact and in bounded memory: the data is streamed in batches of ``--batch-rows`` rows,
once, and again a few times for numeric features with more than
``drift.reference_exact_values`` distinct values, whose exact quantile edges are found by
radix refinement (:mod:`driftline.operators.aggregate.reference`).  Bin edges are the
exact quantiles and bin counts exact counts; categories are counted exactly.

    driftline profile --input 'var/output/enriched/**/*.parquet' --output var/reference.json
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterator
from datetime import datetime, timezone

import polars as pl
import pyarrow.parquet as pq

from driftline.config import load_config
from driftline.config.monitoring import DriftFeature, MonitoringConfig
from driftline.progress import bar
from driftline.operators.aggregate import CategoryCounts, key_column
from driftline.operators.aggregate.accumulator import UNKNOWN
from driftline.operators.aggregate.reference import ColumnScan
from driftline.operators.drift import FeatureProfile, ProfileFile, ReferenceProfile, monitored_features

NAME = "profile"
HELP = "build a drift reference profile (exact bins and counts per key) from historical Parquet data"
ALL = "*"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", action="append", required=True, help="Parquet file or glob (repeatable), e.g. var/output/enriched/**/*.parquet")
    parser.add_argument("--output", "-o", required=True, help="profile JSON file to write")
    parser.add_argument("--since", default=None, help="only rows with event_time >= this ISO-8601 instant")
    parser.add_argument("--until", default=None, help="only rows with event_time < this ISO-8601 instant")
    parser.add_argument("--batch-rows", type=int, default=100_000, help="rows read per batch (bounds memory)")


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


class ProfileBuilder:
    """Streams batches of reference rows into exact per-key feature summaries."""

    def __init__(self, m: MonitoringConfig, columns: set[str]) -> None:
        self.m = m
        self.key_cols = []
        for dim in m.key_dims:
            col = m.columns.route if dim == "model" and m.columns.route in columns else key_column(m, dim)
            self.key_cols.append(col if col in columns else None)
        feats = [f for f in monitored_features(m) if f.name in columns]
        self.numeric = [f for f in feats if f.kind == "numeric"]
        self.categorical = [f for f in feats if f.kind != "numeric"]
        self.scans: dict[tuple[str, str], ColumnScan] = {}
        self.cats: dict[tuple[str, str], CategoryCounts] = {}
        self.rows = 0

    @property
    def columns(self) -> list[str]:
        """The columns to read."""
        return sorted({c for c in self.key_cols if c} | {f.name for f in self.numeric + self.categorical})

    def _keyed(self, batch: pl.DataFrame) -> Iterator[tuple[str, pl.DataFrame]]:
        yield ALL, batch
        cols = [pl.col(c).cast(pl.Utf8).fill_null(UNKNOWN).alias(f"__k{i}") if c else pl.lit(UNKNOWN).alias(f"__k{i}") for i, c in enumerate(self.key_cols)]
        keyed = batch.with_columns(cols)
        names = [f"__k{i}" for i in range(len(cols))]
        for values, part in keyed.partition_by(names, as_dict=True).items():
            yield "|".join(f"{d}={v}" for d, v in zip(self.m.key_dims, values)), part

    def _scan(self, key: str, f: DriftFeature) -> ColumnScan:
        sc = self.scans.get((key, f.name))
        if sc is None:
            d = self.m.drift
            sc = self.scans[(key, f.name)] = ColumnScan(exact_limit=d.reference_exact_values, bins=d.psi_bins, grid_points=d.reference_grid_points)
        return sc

    def first_pass(self, batch: pl.DataFrame) -> None:
        self.rows += batch.height
        for key, part in self._keyed(batch):
            for f in self.numeric:
                self._scan(key, f).add(part.get_column(f.name).cast(pl.Float64).to_numpy())
            for f in self.categorical:
                s = part.get_column(f.name)
                s = (s.explode() if f.kind == "list" else s).drop_nulls().cast(pl.Utf8)
                if s.len():
                    vc = s.value_counts()
                    cc = self.cats.setdefault((key, f.name), CategoryCounts(cap=self.m.drift.categorical_top_k))
                    cc.add_counts(dict(zip(vc.get_column(s.name).to_list(), vc.get_column("count").to_list())))

    def pending(self) -> set[tuple[str, str]]:
        """Scans that need another pass over the data."""
        return {k for k, sc in self.scans.items() if sc.needs_pass()}

    def next_pass(self, batch: pl.DataFrame, pending: set[tuple[str, str]]) -> None:
        for key, part in self._keyed(batch):
            for f in self.numeric:
                if (key, f.name) in pending:
                    self.scans[(key, f.name)].add(part.get_column(f.name).cast(pl.Float64).to_numpy())

    def profile_file(self, sources: list[str]) -> ProfileFile:
        d = self.m.drift
        profiles: dict[str, ReferenceProfile] = {}
        for (key, name), sc in sorted(self.scans.items()):
            if sc.count:
                prof = profiles.setdefault(key, ReferenceProfile(reference_id=f"profile:{key}"))
                prof.features[name] = FeatureProfile.from_scan(name, sc, d)
                if name == self.m.columns.confidence:
                    prof.confidence_mean = sc.mean
        for (key, name), cc in sorted(self.cats.items()):
            prof = profiles.setdefault(key, ReferenceProfile(reference_id=f"profile:{key}"))
            kind = next(f.kind for f in self.categorical if f.name == name)
            prof.features[name] = FeatureProfile(name=name, kind=kind, categories=dict(cc.counts))
        built = datetime.now(timezone.utc).isoformat()
        return ProfileFile(key_dims=list(self.m.key_dims), profiles=profiles, built_at=built, sources=sources, rows=self.rows)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    m = cfg.monitoring
    files = sorted({f for pattern in args.input for f in glob.glob(pattern, recursive=True)})
    if not files:
        print(f"driftline profile: no Parquet file matches {args.input}; check --input (the enrich flow writes under sinks.root)", file=sys.stderr)
        return 1
    names = {n for f in files for n in pq.read_schema(f).names}
    tcol = m.columns.event_time
    since, until = _instant(args.since, "--since"), _instant(args.until, "--until")
    if (since or until) and tcol not in names:
        print(f"driftline profile: --since/--until need the {tcol!r} column", file=sys.stderr)
        return 1
    builder = ProfileBuilder(m, names)
    read = builder.columns + ([tcol] if (since or until) and tcol not in builder.columns else [])

    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def batches(n: int) -> Iterator[pl.DataFrame]:
        # file by file, row group by row group: memory stays one batch, whatever the data size
        progress = bar(total=total, desc=f"profile, pass {n}", unit="row", unit_scale=True)
        for path in files:
            pf = pq.ParquetFile(path)
            cols = [c for c in read if c in pf.schema_arrow.names]
            for rb in pf.iter_batches(batch_size=args.batch_rows, columns=cols):
                progress.update(rb.num_rows)
                df = pl.from_arrow(rb)
                assert isinstance(df, pl.DataFrame)
                if since is not None:
                    df = df.filter(pl.col(tcol) >= since)
                if until is not None:
                    df = df.filter(pl.col(tcol) < until)
                if df.height:
                    yield df
        progress.close()

    for batch in batches(1):
        builder.first_pass(batch)
    if not builder.rows:
        print("driftline profile: the selected data holds no rows; widen --since/--until or choose other --input files", file=sys.stderr)
        return 1
    passes = 1
    while pending := builder.pending():
        passes += 1
        for batch in batches(passes):
            builder.next_pass(batch, pending)
        for k in pending:
            builder.scans[k].end_pass()
    prof = builder.profile_file(files)
    prof.save(args.output)
    keys = len(prof.profiles) - (ALL in prof.profiles)
    star = sorted(prof.profiles[ALL].features) if ALL in prof.profiles else []
    print(f"profile written to {args.output}: {builder.rows} rows, {keys} keys, {passes} passes over the data, features {star}")
    return 0
