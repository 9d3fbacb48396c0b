"""Memory and time of ``driftline profile`` as the reference grows (prints its figures; not run by pytest).

    .venv/bin/python bench/bench_profile.py [rows ...]      # default: 200000 1000000 3000000

For each size it writes a Parquet reference (3 sources x 2 models, 4 numeric features of
which two continuous, 2 categorical, and a text column the command must not read), runs
``driftline profile`` in a fresh process and prints that process's peak resident memory
and time, then checks the ``*`` profile's bin edges and counts against numpy.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
# VmHWM: this process's own peak (ru_maxrss would include the parent's size at fork on Linux)
HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
PEAK = f"import sys; from driftline.cli import main; rc = main(sys.argv[1:]); print('peak_kb', {HWM}); sys.exit(rc)"


def reference(n: int, path: Path) -> None:
    rng = np.random.default_rng(5)
    pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": pl.datetime_range(T0, T0 + timedelta(seconds=n - 1), "1s", eager=True, time_zone="UTC"),
            "source": rng.choice(["reviews", "tickets", "chat"], n),
            "model_route": rng.choice(["m1", "m2"], n),
            "f_chars": rng.integers(10, 3000, n).astype(float),
            "f_words": rng.integers(1, 500, n).astype(float),
            "f_sentiment_lex": np.where(rng.uniform(size=n) < 0.5, rng.choice([-1.0, 0.0, 1.0], n), rng.uniform(-1, 1, n)),
            "model_confidence": rng.beta(8, 2, n),
            "f_lang": rng.choice(["en", "de", "fr", "es"], n),
            "model_label": rng.choice(["positive", "negative"], n),
            "text": ["a review text long enough to weigh on memory if it were read " * 2] * n,
        }
    ).write_parquet(path, row_group_size=100_000)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [200_000, 1_000_000, 3_000_000]
    baseline = subprocess.run([sys.executable, "-c", f"import driftline.cli as c, polars, pyarrow.parquet; c.build_parser(); print({HWM})"], capture_output=True, text=True, check=True)
    print(f"imports alone: {int(baseline.stdout.split()[-1]) / 1024:.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            src, out = Path(tmp) / f"ref{n}.parquet", Path(tmp) / f"ref{n}.json"
            reference(n, src)
            t = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", PEAK, "profile", "-i", str(src), "-o", str(out)], capture_output=True, text=True, check=True)
            took = time.perf_counter() - t
            peak = int(next(line for line in run.stdout.splitlines() if line.startswith("peak_kb")).split()[1])
            from driftline.operators.drift import ProfileFile

            star = ProfileFile.load(out).profiles["*"].features["model_confidence"]
            conf = pl.read_parquet(src, columns=["model_confidence"])["model_confidence"].to_numpy()
            edges = np.unique(np.quantile(conf, np.linspace(0, 1, 11)[1:-1]))
            exact = np.array_equal(star.edges, edges) and np.array_equal(star.counts, np.bincount(np.searchsorted(edges, conf, side="right"), minlength=edges.size + 1))
            print(f"{n:>9,} rows: {took:6.1f} s, peak {peak / 1024:5.0f} MB, model_confidence edges and counts equal numpy: {exact}, KS tolerance {star.ks_tolerance:.1e}")


if __name__ == "__main__":
    main()
