"""Slicing micro-batches into per-key, per-pane accumulators and metrics rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from driftline.config.monitoring import MonitoringConfig
from driftline.operators.aggregate import metrics_row, metrics_schema, rows_frame, slice_frame, window_bounds

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def frame(n: int = 200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "event_id": [f"e{i:05d}" for i in range(n)],
            "event_time": [T0 + timedelta(seconds=float(s)) for s in rng.uniform(0, 120, n)],
            "source": rng.choice(["reviews", "tickets"], n).tolist(),
            "model_name": ["m1"] * n,
            "model_label": rng.choice(["pos", "neg"], n).tolist(),
            "model_confidence": rng.uniform(0.5, 1, n),
            "model_tier": rng.choice(["primary", "fallback"], n, p=[0.8, 0.2]).tolist(),
            "model_error_class": [None if x > 0.1 else ("timeout" if x > 0.05 else "budget_exhausted") for x in rng.uniform(0, 1, n)],
            "model_latency_ms": rng.lognormal(5, 0.5, n),
            "model_input_tokens": rng.integers(10, 100, n),
            "model_output_tokens": rng.integers(1, 10, n),
            "model_cost_usd": rng.uniform(0, 0.01, n),
            "model_cached": rng.uniform(0, 1, n) < 0.3,
            "model_cost_saved_usd": rng.uniform(0, 0.001, n),
            "pii_total": rng.integers(0, 3, n),
            "inj_risk_score": rng.uniform(0, 1, n),
            "f_chars": rng.integers(5, 500, n).astype(float),
            "f_lang": rng.choice(["en", "de"], n).tolist(),
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("ms"))


def test_slice_stats_equal_direct_computation() -> None:
    cfg = MonitoringConfig(columns={"primary_tier": "primary"})  # standalone: no models.chain to take the first tier from
    f = frame()
    slices = slice_frame(f, cfg)
    assert sum(s.acc.events for s in slices) == f.height
    assert [s.max_time for s in slices] == sorted(s.max_time for s in slices)
    s = next(x for x in slices if x.key == ("reviews", "m1") and x.pane == slices[-1].pane)
    start, end = window_bounds(cfg, s.pane)
    part = f.filter((pl.col("source") == "reviews") & (pl.col("event_time") >= start) & (pl.col("event_time") < end))
    row = metrics_row(s.acc, start, end, s.key, cfg)
    assert row["events"] == part.height
    assert row["errors"] == part["model_error_class"].is_not_null().sum()
    assert row["budget_exhausted_calls"] == (part["model_error_class"] == "budget_exhausted").sum()
    assert abs(row["error_rate"] - row["errors"] / part.height) < 1e-12
    assert row["latency_p95_ms"] == np.quantile(part["model_latency_ms"].to_numpy(), 0.95)
    assert abs(row["cost_usd"] - part["model_cost_usd"].sum()) < 1e-12
    assert abs(row["cost_per_request_usd"] - part["model_cost_usd"].sum() / part.height) < 1e-12
    assert row["cache_hits"] == part["model_cached"].sum()
    assert abs(row["confidence_p10"] - np.quantile(part["model_confidence"].to_numpy(), 0.1)) < 1e-12
    assert row["injection_events"] == (part["inj_risk_score"] >= 0.5).sum()
    assert row["pii_total"] == part["pii_total"].sum()
    shares = {d["name"]: d["share"] for d in row["tier_shares"]}
    assert abs(shares["fallback"] - (part["model_tier"] == "fallback").mean()) < 1e-12
    assert abs(row["fallback_share"] - shares["fallback"]) < 1e-12
    assert row["key"] == "source=reviews|model=m1" and row["window_start"] == start
    out = rows_frame([row], metrics_schema(cfg))
    assert out.schema == pl.Schema(metrics_schema(cfg))


def test_merge_of_split_batches_equals_whole() -> None:
    cfg = MonitoringConfig()
    f = frame(400, seed=4)
    whole = {(s.key, s.pane): s.acc for s in slice_frame(f, cfg)}
    merged: dict = {}
    shuffled = f.sample(fraction=1.0, shuffle=True, seed=9)
    for chunk in shuffled.iter_slices(37):
        for s in slice_frame(chunk, cfg):
            if (s.key, s.pane) in merged:
                merged[(s.key, s.pane)].merge(s.acc)
            else:
                merged[(s.key, s.pane)] = s.acc
    assert whole.keys() == merged.keys()
    for k in whole:
        a = metrics_row(whole[k], T0, T0, k[0], cfg)
        b = metrics_row(merged[k], T0, T0, k[0], cfg)
        for col in ("events", "errors", "latency_p50_ms", "latency_p99_ms", "input_tokens", "confidence_p10", "label_counts", "tier_shares"):
            assert a[col] == b[col] or abs(a[col] - b[col]) < 1e-9, col
        assert abs(a["cost_usd"] - b["cost_usd"]) < 1e-12


def test_missing_optional_columns_are_tolerated() -> None:
    cfg = MonitoringConfig()
    f = pl.DataFrame({"event_time": [T0, T0 + timedelta(seconds=1)], "source": ["s", None]})
    slices = slice_frame(f, cfg)
    keys = sorted(s.key for s in slices)
    assert keys == [("s", "unknown"), ("unknown", "unknown")]
    row = metrics_row(slices[0].acc, T0, T0, slices[0].key, cfg)
    assert row["model_calls"] == 0 and row["error_rate"] is None and row["latency_p95_ms"] is None


def test_sliding_panes() -> None:
    cfg = MonitoringConfig(window_seconds=60, slide_seconds=20)
    f = frame(50)
    for s in slice_frame(f, cfg):
        start, end = window_bounds(cfg, s.pane)
        assert end - start == timedelta(seconds=60)
        assert s.acc.first_event_time >= start and s.acc.last_event_time < start + timedelta(seconds=20)


def test_budget_exhaustion_from_error_class_or_fallback_reason() -> None:
    cfg = MonitoringConfig(key_dims=["source"])
    f = pl.DataFrame(
        {
            "event_time": [T0] * 4,
            "source": ["s"] * 4,
            "model_name": ["m", "m", "rules", None],
            "model_error_class": [None, "budget_exhausted", None, "timeout"],
            "model_fallback_reasons": [[], [], ["budget"], None],
        }
    )
    (s,) = slice_frame(f, cfg)
    assert s.acc.budget_exhausted_calls == 2 and s.acc.model_calls == 4


def test_budget_fallback_reason_carries_the_tier_name() -> None:
    """The model stage records ``<tier>:budget``; both that and a bare ``budget`` count."""
    f = pl.DataFrame(
        {
            "event_time": [T0] * 3,
            "source": ["s"] * 3,
            "model_name": ["vader", "vader", "m"],
            "model_error_class": [None, None, None],
            "model_fallback_reasons": [["primary:budget"], ["primary:timeout"], []],
        }
    )
    (s,) = slice_frame(f, MonitoringConfig(key_dims=["source"]))
    assert s.acc.budget_exhausted_calls == 1


def test_grouped_float_summaries_build_the_sketches_add_builds() -> None:
    """Summarizing every group of a column at once gives each group's sketch exactly what
    QuantileSketch.add of the group's values gives (NaNs, ties, signed zeros, empty groups)."""
    from driftline.operators.aggregate.accumulator import _float_summaries
    from driftline.operators.aggregate.sketch import QuantileSketch

    rng = np.random.default_rng(3)
    n = 3000
    columns = {
        "continuous": rng.lognormal(5, 1, n),
        "ties": rng.integers(0, 40, n).astype(np.float64) / 4,
        "zeros_and_nans": np.where(rng.uniform(size=n) < 0.2, np.nan, np.where(rng.uniform(size=n) < 0.3, -0.0, rng.normal(0, 1, n))),
        "all_nan": np.full(n, np.nan),
    }
    gid = rng.integers(0, 50, n)
    gid[gid == 7] = 8  # group 7 has no rows
    rows = [np.flatnonzero(gid == g) for g in range(50)]
    for name, values in columns.items():
        summaries = _float_summaries(values, gid, rows)
        for g, r in enumerate(rows):
            want, got = QuantileSketch(exact_limit=64), QuantileSketch(exact_limit=64)  # some groups overflow to buckets
            want.add(values[r])
            if summaries[g] is not None:
                got.add_summary(*summaries[g])
            assert got.to_dict() == want.to_dict(), (name, g)
            assert (summaries[g] is None) == (want.count == 0)


def test_category_and_list_feature_counts_per_group() -> None:
    """Categorical features count their values, list features their elements (nulls skipped),
    per group, whatever the other columns."""
    from collections import Counter

    from driftline.config.monitoring import DriftFeature
    from driftline.operators.aggregate.accumulator import summaries

    rng = np.random.default_rng(5)
    n = 500
    tags = [None if x < 0.1 else rng.choice(["a", "b", "c", None], int(rng.integers(0, 4))).tolist() for x in rng.uniform(size=n)]
    langs = rng.choice(["en", "de", "fr"], n).tolist()
    langs = [None if i % 17 == 0 else v for i, v in enumerate(langs)]
    df = pl.DataFrame({"g": rng.integers(0, 6, n), "tags": tags, "lang": langs, "flag": rng.uniform(size=n) < 0.5}, schema_overrides={"tags": pl.List(pl.Utf8)})
    feats = [DriftFeature(name="tags", kind="list"), DriftFeature(name="lang", kind="categorical"), DriftFeature(name="flag", kind="categorical")]
    got = {keys[0]: acc for keys, _first, acc in summaries(df, ["g"], MonitoringConfig(), feats)}
    for g, acc in got.items():
        rows = [i for i in range(n) if df["g"][i] == g]
        assert acc.categorical["tags"].counts == Counter(t for i in rows if tags[i] is not None for t in tags[i] if t is not None)
        assert acc.categorical["lang"].counts == Counter(langs[i] for i in rows if langs[i] is not None)
        assert acc.categorical["flag"].counts == Counter(str(df["flag"][i]).lower() for i in rows)
