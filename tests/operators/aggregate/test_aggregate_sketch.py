"""Quantile sketch and category counts: accuracy, bounded memory, order independence."""

from __future__ import annotations

import numpy as np

from driftline.operators.aggregate.sketch import OTHER, CategoryCounts, QuantileSketch


def test_exact_while_small_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    v = rng.lognormal(5, 1, 500)
    s = QuantileSketch(exact_limit=1024)
    s.add(v[:200])
    s.add(v[200:])
    assert s.exact
    for q in (0.5, 0.95, 0.99):
        assert s.quantile(q) == np.quantile(v, q)


def test_sketch_relative_error_within_one_percent_and_bounded() -> None:
    rng = np.random.default_rng(2)
    v = np.concatenate([rng.lognormal(5, 1.5, 100_000), rng.uniform(0.5, 30_000, 20_000)])
    s = QuantileSketch(exact_limit=1024, relative_accuracy=0.01)
    for chunk in np.array_split(v, 37):
        s.add(chunk)
    assert not s.exact
    assert len(s.pos) < 1500  # bounded by log range, not by count
    for q in (0.1, 0.5, 0.9, 0.95, 0.99, 0.999):
        truth = np.quantile(v, q, method="lower")
        got = s.quantile(q)
        assert abs(got - truth) / truth <= 0.01 + 1e-12, (q, got, truth)
    assert s.count == v.size and abs(s.mean - v.mean()) < 1e-6 * v.mean()


def test_merge_is_order_and_split_independent() -> None:
    rng = np.random.default_rng(3)
    v = rng.exponential(300, 5000)

    def build(parts: list[np.ndarray]) -> QuantileSketch:
        sketches = []
        for p in parts:
            s = QuantileSketch(exact_limit=1024)
            s.add(p)
            sketches.append(s)
        out = QuantileSketch(exact_limit=1024)
        for s in sketches:
            out.merge(s)
        return out

    a = build(np.array_split(v, 5))
    b = build(list(reversed(np.array_split(rng.permutation(v), 13))))
    assert a.pos == b.pos and a.count == b.count
    assert [a.quantile(q) for q in (0.5, 0.99)] == [b.quantile(q) for q in (0.5, 0.99)]
    # small merges stay exact
    c = build([v[:100], v[100:300]])
    assert c.exact and c.quantile(0.5) == np.quantile(v[:300], 0.5)


def test_negative_and_zero_values_and_roundtrip() -> None:
    v = np.array([-5.0, -1.0, 0.0, 0.0, 2.0, 10.0] * 300)
    s = QuantileSketch(exact_limit=64)
    s.add(v)
    assert s.quantile(0.0) == -5.0 and s.quantile(1.0) == 10.0
    assert abs(s.quantile(0.5)) < 1e-9
    r = QuantileSketch.from_dict(s.to_dict())
    assert r.quantile(0.2) == s.quantile(0.2) and r.count == s.count


def test_category_counts_fold_rarest_into_other() -> None:
    c = CategoryCounts(cap=3)
    c.add_counts({"a": 10, "b": 5, "c": 1, "d": 1})
    assert c.counts == {"a": 10, "b": 5, OTHER: 2}
    assert c.total == 17


def test_merge_sorted_counts_equals_merge_counts() -> None:
    from driftline.operators.aggregate.sketch import merge_counts, merge_sorted_counts

    rng = np.random.default_rng(11)
    for k1, k2 in [(0, 5), (5, 0), (1, 1), (40, 7), (300, 300), (2000, 30)]:
        v1 = np.unique(rng.integers(-50, 400, k1) / 4.0)
        v2 = np.unique(rng.integers(-50, 400, k2) / 4.0)
        c1, c2 = rng.integers(1, 9, v1.size).astype(np.int64), rng.integers(1, 9, v2.size).astype(np.int64)
        want, got = merge_counts(v1, c1, v2, c2), merge_sorted_counts(v1, c1, v2, c2)
        assert want[0].tolist() == got[0].tolist() and want[1].tolist() == got[1].tolist() and got[1].dtype == np.int64
    # values already held (the added counts path): the same arrays, and the inputs unchanged
    v1 = np.unique(rng.integers(-50, 400, 200) / 4.0)
    c1 = rng.integers(1, 9, v1.size).astype(np.int64)
    for pick in (v1[:1], v1[-1:], v1[::3], v1):
        c2 = rng.integers(1, 9, pick.size).astype(np.int64)
        before = c1.copy()
        want, got = merge_counts(v1, c1, pick, c2), merge_sorted_counts(v1, c1, pick, c2)
        assert want[0].tolist() == got[0].tolist() and want[1].tolist() == got[1].tolist() and got[1].dtype == np.int64
        assert c1.tolist() == before.tolist()
