"""Drift figures equal numpy/scipy on the same rows, at production reference sizes (issue 21).

A reference of 6,000 rows per key is written to Parquet and profiled with
``driftline profile``; windows of 400 events per key then go through the window flow in
a stable, a shifted and a stable-again phase.  For every window, key and feature the
test recomputes PSI, KS and JS from the raw rows with numpy and scipy:

- the per-key references hold at most ``drift.reference_exact_values`` distinct values, so
  every statistic must match to 1e-9;
- a key the profile does not know is compared with ``*`` (12,000 rows, continuous
  features beyond the exact limit): PSI and JS stay exact (exact edges and counts), KS must
  be within the profile's documented ``ks_tolerance`` (at most ``1 / reference_grid_points``).

No drift alert fires in the stable phases; both fire in the shifted one.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import numpy as np
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from driftline.cli import main as cli_main
from driftline.clock import FakeClock
from driftline.config.monitoring import MonitoringConfig
from driftline.flows.windowing import window_monitor
from driftline.operators.drift import ProfileFile
from driftline.testing import InMemorySink

T0 = datetime(2026, 4, 1, tzinfo=timezone.utc)
NUMERIC = ("f_chars", "f_words", "f_sentiment_lex", "model_confidence")
CATEGORICAL = ("f_lang", "model_label")
PROFILED = ("reviews", "tickets")
PHASES = ["stable"] * 4 + ["shifted"] * 3 + ["stable"] * 2
PER_WINDOW = 400
EPS = 1e-4


def rows(source: str, n: int, shifted: bool, rng: np.random.Generator, start: datetime, seconds: float) -> pl.DataFrame:
    sentiment = np.where(rng.uniform(size=n) < 0.4, rng.choice([-1.0, 0.0, 1.0], n), rng.uniform(-1, 1, n))  # atoms at the edges
    return pl.DataFrame(
        {
            "event_time": [start + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, seconds, n))],
            "source": [source] * n,
            "model_name": ["m1"] * n,
            "f_chars": (rng.normal(700, 150, n) if shifted else rng.normal(300, 80, n)).round().clip(1, None),
            "f_words": rng.integers(30, 160, n).astype(float) if shifted else rng.integers(5, 80, n).astype(float),
            "f_sentiment_lex": np.clip(sentiment - (0.6 if shifted else 0.0), -1, 1),
            "model_confidence": rng.beta(4, 3, n) if shifted else rng.beta(8, 2, n),
            "f_lang": rng.choice(["en", "de", "fr"], n, p=[0.2, 0.4, 0.4] if shifted else [0.8, 0.15, 0.05]).tolist(),
            "model_label": rng.choice(["positive", "negative"], n, p=[0.2, 0.8] if shifted else [0.7, 0.3]).tolist(),
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("ms"))


def numpy_stats(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> tuple[float, float, float]:
    """PSI over numpy's exact quantile edges, scipy's KS statistic, scipy's JS distance over the same bins."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1).astype(float)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1).astype(float)
    rs, cs = r / r.sum(), c / c.sum()
    rs, cs = np.where(rs > 0, rs, EPS), np.where(cs > 0, cs, EPS)
    return float(np.sum((cs - rs) * np.log(cs / rs))), float(ks_2samp(ref, cur).statistic), float(jensenshannon(r, c))


def categorical_js(ref: list[str], cur: list[str]) -> float:
    cats = sorted(set(ref) | set(cur))
    return float(jensenshannon([ref.count(k) for k in cats], [cur.count(k) for k in cats]))


def test_drift_equals_numpy_and_scipy_with_a_large_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(2104)
    reference = pl.concat([rows(s, 6000, False, rng, T0 - timedelta(days=1), 3600) for s in PROFILED])
    reference.write_parquet(tmp_path / "reference.parquet")
    assert cli_main(["profile", "--input", str(tmp_path / "reference.parquet"), "--output", str(tmp_path / "ref.json"), "--batch-rows", "2500"]) == 0
    cfg = MonitoringConfig(drift={"reference": "profile", "profile_path": str(tmp_path / "ref.json")})
    star = ProfileFile.load(tmp_path / "ref.json").profiles["*"].features["model_confidence"]
    assert not star.exact and 0 < star.ks_tolerance <= 1 / cfg.drift.reference_grid_points

    live = pl.concat(
        [rows(s, PER_WINDOW, phase == "shifted", rng, T0 + timedelta(minutes=w), 59.9) for w, phase in enumerate(PHASES) for s in (*PROFILED, "chat")]
    ).sort("event_time")
    flow = Dataflow("drift_exact")
    out = window_monitor("mon", op.input("in", flow, TestingSource([live.slice(i, 500) for i in range(0, live.height, 500)])), cfg, clock=FakeClock(T0))
    sinks = {"metrics": InMemorySink(), "alerts": InMemorySink()}
    for name, sink in sinks.items():
        op.output(f"{name}_out", getattr(out, name), sink)
    run_main(flow)
    metrics = pl.concat(sinks["metrics"].items)
    assert metrics.height == len(PHASES) * 3

    checked = sketched = 0
    worst = {"psi": 0.0, "js": 0.0, "ks exact": 0.0, "ks sketched": 0.0}
    for row in metrics.iter_rows(named=True):
        source = row["source"]
        ref = reference if source not in PROFILED else reference.filter(pl.col("source") == source)
        cur = live.filter((pl.col("source") == source) & (pl.col("event_time") >= row["window_start"]) & (pl.col("event_time") < row["window_end"]))
        assert row["events"] == cur.height == PER_WINDOW
        entries = {e["feature"]: e for e in row["drift"]}
        assert set(entries) == {*NUMERIC, *CATEGORICAL}
        for f in NUMERIC:
            e = entries[f]
            want_psi, want_ks, want_js = numpy_stats(ref[f].to_numpy(), cur[f].to_numpy())
            assert abs(e["psi"] - want_psi) <= 1e-9, (row["key"], f, e["psi"], want_psi)
            assert abs(e["js"] - want_js) <= 1e-9, (row["key"], f, e["js"], want_js)
            worst["psi"] = max(worst["psi"], abs(e["psi"] - want_psi))
            worst["js"] = max(worst["js"], abs(e["js"] - want_js))
            if source in PROFILED or (e["exact"] and e["ks_tolerance"] == 0):
                assert e["exact"] and abs(e["ks"] - want_ks) <= 1e-9, (row["key"], f, e["ks"], want_ks)
                worst["ks exact"] = max(worst["ks exact"], abs(e["ks"] - want_ks))
            else:
                assert not e["exact"] and abs(e["ks"] - want_ks) <= e["ks_tolerance"], (row["key"], f, e["ks"], want_ks, e["ks_tolerance"])
                worst["ks sketched"] = max(worst["ks sketched"], abs(e["ks"] - want_ks))
                sketched += 1
            checked += 1
        for f in CATEGORICAL:
            assert abs(entries[f]["js"] - categorical_js(ref[f].to_list(), cur[f].to_list())) <= 1e-9
            checked += 1
        assert abs(row["confidence_drift_rel"] - abs(cur["model_confidence"].mean() - ref["model_confidence"].mean()) / ref["model_confidence"].mean()) <= 1e-9
    assert checked == metrics.height * 6 and sketched == len(PHASES)  # model_confidence of the unprofiled key
    print("largest difference from numpy/scipy:", {k: f"{v:.1e}" for k, v in worst.items()}, f"(KS tolerance {star.ks_tolerance:.1e})")

    # drift alerts only in the shifted phase, and there for every key
    alerts = pl.concat(sinks["alerts"].items)
    drift_alerts = alerts.filter(pl.col("rule").is_in(["feature_psi_high", "confidence_drift"]))
    phase_of = {T0 + timedelta(minutes=w): p for w, p in enumerate(PHASES)}
    firing = drift_alerts.filter(pl.col("state") == "firing")
    assert {phase_of[t] for t in firing["window_start"]} == {"shifted"}
    assert firing.height == 2 * 3  # both rules, three keys, once each
    stable_psi = metrics.filter(pl.col("window_start").is_in([t for t, p in phase_of.items() if p == "stable"]))["psi_max"]
    assert stable_psi.max() < 0.1
