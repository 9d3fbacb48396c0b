"""Drift statistics equal numpy/scipy reference computations; profiles; warm-up references."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, ks_2samp, wasserstein_distance

from driftline.config import ConfigError, load_config
from driftline.config.monitoring import DriftFeature, MonitoringConfig
from driftline.operators.aggregate import accumulate, metrics_row
from driftline.operators.drift import (
    DriftMonitor,
    ProfileFile,
    bin_counts,
    build_profile,
    chisquare_pvalue,
    choose_method,
    compare,
    confidence_level,
    js_distance,
    ks_statistic,
    profile_from_accumulators,
    psi,
    psi_level,
    quantile_edges,
    wasserstein_normed,
)

RNG = np.random.default_rng(42)
REF = RNG.normal(100, 15, 800)
CUR = RNG.normal(110, 20, 600)
EPS = 1e-4


def numpy_psi(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """Independent reference: histogram over quantile edges with open outer bins."""
    inner = np.unique(np.percentile(ref, np.arange(1, bins) * 100.0 / bins))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    r = np.array([np.sum((ref >= lo) & (ref < hi)) for lo, hi in zip(edges[:-1], edges[1:])], float) / ref.size
    c = np.array([np.sum((cur >= lo) & (cur < hi)) for lo, hi in zip(edges[:-1], edges[1:])], float) / cur.size
    r[r == 0] = EPS
    c[c == 0] = EPS
    return float(np.sum((c - r) * np.log(c / r)))


def test_psi_equals_numpy_reference() -> None:
    edges = quantile_edges(REF, 10)
    got = psi(bin_counts(edges, REF), bin_counts(edges, CUR), EPS)
    assert got == pytest.approx(numpy_psi(REF, CUR), abs=1e-6)
    assert psi(bin_counts(edges, REF), bin_counts(edges, REF[::-1])) == pytest.approx(0.0, abs=1e-12)


def test_psi_stays_finite_with_empty_bins() -> None:
    edges = quantile_edges(REF, 10)
    far = np.full(100, 1e6)
    got = psi(bin_counts(edges, REF), bin_counts(edges, far), EPS)
    assert np.isfinite(got) and got == pytest.approx(numpy_psi(REF, far), abs=1e-6)


def test_ks_equals_scipy() -> None:
    assert ks_statistic(REF, CUR) == pytest.approx(ks_2samp(REF, CUR).statistic, abs=1e-6)
    ints_a, ints_b = RNG.integers(0, 20, 500), RNG.integers(3, 25, 300)  # with ties
    assert ks_statistic(ints_a, ints_b) == pytest.approx(ks_2samp(ints_a, ints_b).statistic, abs=1e-6)


def test_js_equals_scipy() -> None:
    p = {"en": 70, "de": 20, "fr": 10}
    q = {"en": 30, "de": 30, "es": 40}
    keys = sorted(set(p) | set(q))
    ref = jensenshannon([p.get(k, 0) for k in keys], [q.get(k, 0) for k in keys])
    assert js_distance(p, q) == pytest.approx(ref, abs=1e-6)
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-9)


def test_wasserstein_and_chisquare_equal_scipy() -> None:
    assert wasserstein_normed(REF, CUR) == pytest.approx(wasserstein_distance(REF, CUR) / np.std(REF), abs=1e-6)
    ref, cur = {"a": 50, "b": 30, "c": 20}, {"a": 40, "b": 40, "c": 20}
    exp = np.array([0.5, 0.3, 0.2]) * 100
    assert chisquare_pvalue(ref, cur) == pytest.approx(chisquare([40, 40, 20], exp).pvalue, abs=1e-6)


def test_levels_and_auto_method() -> None:
    d = MonitoringConfig().drift
    assert [psi_level(v, d) for v in (0.05, 0.1, 0.3)] == ["none", "moderate", "significant"]
    assert [confidence_level(v, d) for v in (0.01, 0.05, 0.12, 0.2)] == ["none", "minor", "moderate", "significant"]
    assert choose_method("numeric", 500, 100, d) == "ks"
    assert choose_method("numeric", 5000, 100, d) == "wasserstein"
    assert choose_method("numeric", 500, 3, d) == "chisquare"
    assert choose_method("categorical", 5000, 10, d) == "jensenshannon"


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
FEATS = [DriftFeature(name="f_chars", kind="numeric"), DriftFeature(name="f_lang", kind="categorical")]


def window_frame(values: np.ndarray, langs: list[str], conf: np.ndarray) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {"event_time": [T0] * n, "source": ["s"] * n, "model_name": ["m"] * n, "f_chars": values, "f_lang": langs, "model_confidence": conf, "model_label": ["pos"] * n}
    )


def test_compare_through_profile_equals_references() -> None:
    cfg = MonitoringConfig(exact_quantile_limit=10_000)
    ref_langs = RNG.choice(["en", "de"], REF.size, p=[0.8, 0.2]).tolist()
    cur_langs = RNG.choice(["en", "de", "fr"], CUR.size, p=[0.5, 0.3, 0.2]).tolist()
    ref_conf, cur_conf = RNG.uniform(0.6, 1, REF.size), RNG.uniform(0.4, 0.9, CUR.size)
    ref_acc = accumulate(window_frame(REF, ref_langs, ref_conf), cfg, FEATS)
    cur_acc = accumulate(window_frame(CUR, cur_langs, cur_conf), cfg, FEATS)
    prof = build_profile(ref_acc, "r1", cfg, FEATS)
    res = compare(prof, cur_acc, cfg, FEATS)
    parts: dict = {}
    for _ in range(2):  # a reference's kept parts (built, then reused) give the same floats
        assert compare(prof, cur_acc, cfg, FEATS, parts=parts) == res
    assert len(parts) == 4  # f_chars, model_confidence (numeric), f_lang and model_label (categorical)
    from driftline.operators.drift import _js_of_bins, _ks_and_wasserstein

    for name, cur in (("f_chars", cur_acc.numeric["f_chars"]), ("model_confidence", cur_acc.confidence)):
        ref, e = prof.features[name], next(e for e in res["drift"] if e["feature"] == name)
        cv, cw = cur.weighted()
        cur_bins = bin_counts(ref.edges, cv, cw)
        assert e["psi"] == psi(ref.counts, cur_bins, cfg.drift.psi_epsilon) and e["js"] == _js_of_bins(ref.counts, cur_bins)
        assert (e["ks"], e["wasserstein"]) == _ks_and_wasserstein(ref.support, cv, ref.weights, cw, ref.std)
    by = {e["feature"]: e for e in res["drift"]}
    assert by["f_chars"]["psi"] == pytest.approx(numpy_psi(REF, CUR), abs=1e-6)
    assert by["f_chars"]["ks"] == pytest.approx(ks_2samp(REF, CUR).statistic, abs=1e-6)
    assert by["f_chars"]["method"] == "ks" and by["f_chars"]["drifted"]
    assert by["model_confidence"]["psi"] == pytest.approx(numpy_psi(ref_conf, cur_conf), abs=1e-6)
    langs = sorted({*ref_langs, *cur_langs})
    js_ref = jensenshannon([ref_langs.count(k) for k in langs], [cur_langs.count(k) for k in langs])
    assert by["f_lang"]["js"] == pytest.approx(js_ref, abs=1e-6)
    assert res["confidence_drift_rel"] == pytest.approx(abs(cur_conf.mean() - ref_conf.mean()) / ref_conf.mean(), abs=1e-9)
    assert res["psi_max"] == max(e["psi"] for e in res["drift"] if e["psi"] is not None)
    # the file form gives the same answers and merges counts
    pf = profile_from_accumulators({"*": ref_acc}, cfg, features=FEATS)
    tmp = __import__("tempfile").mktemp(suffix=".json")
    pf.save(tmp)
    loaded = ProfileFile.load(tmp)
    again = compare(loaded.for_key("source=s|model=m"), cur_acc, cfg, FEATS)
    assert again["psi_max"] == pytest.approx(res["psi_max"], abs=1e-12)
    assert loaded.for_key("x").reference_id.startswith("profile:")
    fp = loaded.profiles["*"].features["f_chars"]
    n0 = sum(fp.counts)
    fp.merge(loaded.profiles["*"].features["f_chars"].__class__.from_dict(fp.to_dict()))
    assert sum(fp.counts) == 2 * n0


def test_ks_pvalues_equal_scipys_kstwo_sf_on_every_branch() -> None:
    """ks_pvalues computes SciPy's Pomeranz range (effective n <= 140, n*d**2 in
    (0.754693, 4]) by the Durbin matrix: the same p-values as kstwo.sf within 1e-13 there,
    and exactly kstwo.sf's everywhere else (small and large d, n above 140, NaN)."""
    from scipy.stats import kstwo

    from driftline.operators.drift import ks_pvalues

    stats, n, m = [], [], []
    for en in [*range(2, 160), 500, 3000]:
        lo, hi = np.sqrt(0.754693 / en), np.sqrt(4 / en)
        for d in [*np.linspace(0.0, 1.0, 41), *np.linspace(lo * 0.999, min(hi * 1.001, 0.6), 25)]:
            stats.append(float(d))
            n.append(2 * en)  # round(2en * 2en / 4en) = en
            m.append(2 * en)
    stats.append(float("nan"))
    n.append(40)
    m.append(40)
    got = ks_pvalues(stats, n, m)
    want = kstwo.sf(np.asarray(stats), np.asarray(n) // 2)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.max(np.abs(got[ok] - want[ok])) < 1e-13
    en, d = np.asarray(n) // 2, np.asarray(stats)
    pomeranz = (en <= 140) & (en * d > 1) & (en * d < en - 1) & (d < 0.5) & (en * d * d > 0.754693) & (en * d * d <= 4)
    assert pomeranz.sum() > 1000 and np.array_equal(got[~pomeranz & ok], want[~pomeranz & ok])


def test_pending_ks_pvalues_equal_the_per_window_ones() -> None:
    """compare(..., ks_pending=...) then fill_ks_pvalues over several windows gives the rows
    compare gives window by window (p-values, drifted flags, drifted_features); so do the
    chi-square and the numeric path of a reference without a known std."""
    from driftline.operators.drift import fill_ks_pvalues

    feats = [*FEATS, DriftFeature(name="f_chi", kind="numeric", method="chisquare")]
    cfg = MonitoringConfig(exact_quantile_limit=10_000)

    def frame(vals: np.ndarray, shift: float) -> pl.DataFrame:
        f = window_frame(vals, ["en"] * vals.size, RNG.uniform(0.5, 1, vals.size))
        return f.with_columns(pl.Series("f_chi", np.round(vals / 20 + shift)))

    prof = build_profile(accumulate(frame(REF, 0.0), cfg, feats), "r", cfg, feats)
    windows = [accumulate(frame(RNG.normal(100 + 3 * i, 10, 300), i), cfg, feats) for i in range(4)]
    one_by_one = [compare(prof, acc, cfg, feats) for acc in windows]
    pending: list = []
    parts: dict = {}
    deferred = [compare(prof, acc, cfg, feats, parts=parts, ks_pending=pending) for acc in windows]
    assert len(pending) == 2 * len(windows)  # f_chars (auto: ks) and model_confidence
    fill_ks_pvalues(pending)
    assert deferred == one_by_one
    assert any(r["drifted_features"] for r in one_by_one)
    assert {e["method"] for r in one_by_one for e in r["drift"]} >= {"ks", "chisquare"}
    prof.features["f_chars"].std = None  # the generic path: the same floats
    assert [compare(prof, acc, cfg, feats) for acc in windows] == one_by_one


def test_warmup_reference_is_built_once_from_first_windows() -> None:
    cfg = MonitoringConfig(drift={"warmup_windows": 2, "features": [f.model_dump() for f in FEATS]})
    mon = DriftMonitor(cfg)
    rows = []
    for i in range(4):
        vals = RNG.normal(100, 10, 1000) if i < 3 else RNG.normal(200, 10, 1000)
        acc = accumulate(window_frame(vals, ["en"] * 1000, RNG.uniform(0.7, 0.9, 1000)), cfg)
        start = T0 + timedelta(minutes=i)
        rows.append(mon.on_window(metrics_row(acc, start, start + timedelta(minutes=1), ("s", "m"), cfg), acc))
    assert [r["reference_id"] is None for r in rows] == [True, True, False, False]
    assert rows[2]["reference_id"] == rows[3]["reference_id"]
    assert rows[2]["psi_max"] < 0.1 and rows[3]["psi_max"] > 0.25


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="monitoring.drift.features"):
        load_config(None, env={}, overrides={"monitoring": {"drift": {"features": [{"name": "x", "kind": "categorical", "method": "ks"}]}}})
    with pytest.raises(ConfigError, match="monitoring.drift"):
        load_config(None, env={}, overrides={"monitoring": {"drift": {"reference": "profile"}}})


def test_profile_command_builds_a_loadable_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from driftline.cli import main

    n = 3000
    rng = np.random.default_rng(3)
    df = pl.DataFrame(
        {
            "event_time": [T0 + timedelta(seconds=i) for i in range(n)],
            "source": rng.choice(["a", "b"], n).tolist(),
            "model_name": ["m"] * n,
            "f_chars": rng.normal(100, 10, n),
            "f_lang": rng.choice(["en", "de"], n).tolist(),
            "model_confidence": rng.uniform(0.5, 1, n),
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("ms"))
    df.write_parquet(tmp_path / "part.parquet")
    out = tmp_path / "ref.json"
    assert main(["profile", "--input", str(tmp_path / "*.parquet"), "--output", str(out)]) == 0
    pf = ProfileFile.load(out)
    assert set(pf.profiles) == {"*", "source=a|model=m", "source=b|model=m"}
    star = pf.profiles["*"].features["f_chars"]
    assert sum(star.counts) == n and len(star.edges) == 9
    cfg = MonitoringConfig(drift={"reference": "profile", "profile_path": str(out)})
    mon = DriftMonitor(cfg)
    acc = accumulate(window_frame(RNG.normal(100, 10, 500), ["en"] * 500, RNG.uniform(0.5, 1, 500)), cfg)
    row = mon.on_window(metrics_row(acc, T0, T0, ("s", "m"), cfg), acc)
    assert row["reference_id"].startswith("profile:") and row["psi_max"] is not None
