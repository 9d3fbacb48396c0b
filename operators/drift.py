"""Drift of each window against a reference profile.

Statistics (all vectorized numpy; scipy only for the p-value distributions):

- **PSI** over ``drift.psi_bins`` bins cut at the reference's exact quantiles (numpy
  ``linear``; interior edges, the outer bins are open).  Shares of empty bins are replaced
  by ``drift.psi_epsilon`` (default 1e-4) before ``sum((c - r) * ln(c / r))``, so PSI stays
  finite.  Levels: below 0.1 none, below 0.25 moderate, else significant (configurable).
- **Kolmogorov-Smirnov** statistic (largest gap between the two empirical CDFs), equal
  to ``scipy.stats.ks_2samp(...).statistic``.
- **Jensen-Shannon distance** (square root of the divergence, natural log), equal to
  ``scipy.spatial.distance.jensenshannon`` on the two count vectors: categories for
  categorical and list features, the PSI bins for numeric ones.
- **Wasserstein** distance divided by the reference's standard deviation, and the
  **chi-square** test, used when a feature's method is chosen automatically.
- **Relative change of mean confidence**: ``|mean - ref_mean| / ref_mean`` with the
  levels minor (5%), moderate (10%) and significant (15%).

Exactness.  The reference's bin edges are exact quantiles and its bin counts exact
counts, whatever its size; a window keeps its values exactly (up to
``drift.window_exact_values`` distinct values per feature) and is binned with the same
edges, so PSI and JS equal the exact computation.  KS and Wasserstein are exact too while
the reference has at most ``drift.reference_exact_values`` distinct values; a larger
reference keeps a grid of at most ``drift.reference_grid_points`` cells with exact counts,
and KS is then within the profile's ``ks_tolerance`` (at most ``1 / reference_grid_points``)
of the exact value.  Each drift entry says whether it is ``exact``.

Automatic method choice (``method: auto``) follows Evidently: with at most
``drift.auto_small_reference`` (1000) reference values, numeric features with more than 5
distinct values use the KS test (drift when p < 0.05), other features chi-square (p <
0.05); with a larger reference, numeric features use the normed Wasserstein distance and
the others Jensen-Shannon (drift at 0.1).

A :class:`ReferenceProfile` is built once, from the first ``drift.warmup_windows``
windows of each key or loaded from a :class:`ProfileFile` written by ``driftline
profile``, and never recomputed per window.

>>> import numpy as np
>>> round(psi(np.array([50, 50]), np.array([50, 50])), 6)
0.0
>>> round(js_distance({"a": 1, "b": 1}, {"a": 1, "b": 1}), 6)
0.0
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import chdtrc
from scipy.stats import kstwo  # loaded with the module, at start-up: importing it at the first window cost about a second of the run

try:  # the exact Kolmogorov CDF by the Durbin matrix (Marsaglia-Tsang-Wang), see ks_pvalues
    from scipy.stats._ksstats import _kolmogn_DMTW
except ImportError:  # a SciPy without it: kstwo.sf everywhere
    _kolmogn_DMTW = None

from driftline.config.monitoring import DriftConfig, DriftFeature, MonitoringConfig
from driftline.operators.aggregate.accumulator import WindowAccumulator
from driftline.operators.aggregate.reference import ColumnScan
from driftline.operators.aggregate.rows import key_string
from driftline.operators.aggregate.sketch import OTHER, CategoryCounts, QuantileSketch, merge_counts, weighted_quantile

PROFILE_FORMAT = "driftline-profile/2"
DEFAULT_THRESHOLDS = {"psi": 0.1, "ks": 0.05, "chisquare": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1}
P_VALUE_METHODS = ("ks", "chisquare")
_NONE = np.empty(0, dtype=np.float64)


# ---------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------
def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Distinct interior edges at the ``i / bins`` quantiles (numpy ``linear``) of ``values``."""
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.unique(np.quantile(np.asarray(values, dtype=np.float64), qs))


def bin_counts(edges: np.ndarray, values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts per bin ``(-inf, e0), [e0, e1), ..., [e_last, inf)`` of ``values``."""
    idx = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right")
    return np.bincount(idx, weights=weights, minlength=len(edges) + 1).astype(np.float64)


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, epsilon: float = 1e-4) -> float:
    """Population Stability Index of two count vectors over the same bins."""
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    r = r / r.sum()
    c = c / c.sum()
    r = np.where(r > 0, r, epsilon)
    c = np.where(c > 0, c, epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def _ecdf_pair(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray | None, wb: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both right-continuous ECDFs evaluated at every distinct value of ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    wa = np.ones_like(a) if wa is None else np.asarray(wa, dtype=np.float64)
    wb = np.ones_like(b) if wb is None else np.asarray(wb, dtype=np.float64)
    oa, ob = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    a, wa, b, wb = a[oa], wa[oa], b[ob], wb[ob]
    grid = np.unique(np.concatenate([a, b]))
    ca = np.concatenate([[0.0], np.cumsum(wa)]) / wa.sum()
    cb = np.concatenate([[0.0], np.cumsum(wb)]) / wb.sum()
    fa = ca[np.searchsorted(a, grid, side="right")]
    fb = cb[np.searchsorted(b, grid, side="right")]
    return grid, fa, fb


def ks_statistic(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None, wb: np.ndarray | None = None) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (optionally of weighted samples)."""
    _, fa, fb = _ecdf_pair(a, b, wa, wb)
    return float(np.max(np.abs(fa - fb)))


def _ks_and_wasserstein(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray, std: float | None) -> tuple[float, float]:
    """:func:`ks_statistic` and :func:`wasserstein_normed` from one pass over the two ECDFs
    (the same floating-point operations as each of them)."""
    grid, fa, fb = _ecdf_pair(a, b, wa, wb)
    gap = np.abs(fa - fb)
    dist = float(np.sum(gap[:-1] * np.diff(grid))) if grid.size > 1 else 0.0
    if std is None:
        return float(np.max(gap)), wasserstein_normed(a, b, wa, wb)
    return float(np.max(gap)), dist / max(std, 0.001)


def ks_pvalue(statistic: float, n: float, m: float) -> float:
    """Asymptotic two-sided p-value of the KS statistic for sample sizes ``n`` and ``m``."""
    return float(ks_pvalues([statistic], [n], [m])[0])


def ks_pvalues(statistics: Sequence[float], n: Sequence[float], m: Sequence[float]) -> np.ndarray:
    """:func:`ks_pvalue` of several statistics in one call (scipy's per-call overhead, paid
    once per window instead of once per feature, was as large as the computation).

    The p-value is ``kstwo.sf(statistic, round(n*m/(n+m)))``, as SciPy's ``ks_2samp``
    computes it asymptotically.  Where SciPy computes that exactly with Pomeranz's
    recursion (effective n at most 140, ``n*d**2`` in (0.754693, 4]), it is computed
    exactly by the Durbin matrix instead, which SciPy itself uses just below that range:
    the same probability within 1e-13 (tests/operators/test_drift.py compares them on a
    grid), at about a seventh of the time (Pomeranz's recursion took 2-3 ms per value, the
    larger part of the monitor step's time in the end-to-end bench).

    >>> p = ks_pvalues([0.2, 0.05, 0.9], [60, 5000, 30], [90, 4000, 30])
    >>> bool(np.allclose(p, kstwo.sf([0.2, 0.05, 0.9], [36, 2222, 15]), rtol=0, atol=1e-13))
    True
    """
    nn, mm = np.asarray(n, dtype=np.float64), np.asarray(m, dtype=np.float64)
    en = np.maximum(np.round(nn * mm / (nn + mm)), 1).astype(np.int64)
    d, en = np.broadcast_arrays(np.atleast_1d(np.asarray(statistics, dtype=np.float64)), np.atleast_1d(en))
    if _kolmogn_DMTW is None:
        return kstwo.sf(d, en)
    t = en * d
    pomeranz = (en <= 140) & (t > 1.0) & (t < en - 1) & (d < 0.5) & (t * d > 0.754693) & (t * d <= 4.0)
    out = np.empty(d.shape, dtype=np.float64)
    rest = ~pomeranz
    if rest.any():
        out[rest] = kstwo.sf(d[rest], en[rest])
    for i in np.flatnonzero(pomeranz):
        out[i] = min(max(1.0 - float(_kolmogn_DMTW(int(en[i]), float(d[i]), cdf=True)), 0.0), 1.0)
    return out


def wasserstein_normed(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None, wb: np.ndarray | None = None, *, std: float | None = None
) -> float:
    """First Wasserstein distance of ``b`` from ``a``, divided by ``max(std(a), 0.001)`` (as Evidently).

    ``std`` overrides the standard deviation computed from ``a`` (a profile knows its exact one).
    """
    grid, fa, fb = _ecdf_pair(a, b, wa, wb)
    dist = float(np.sum(np.abs(fa - fb)[:-1] * np.diff(grid))) if grid.size > 1 else 0.0
    if std is None:
        a = np.asarray(a, dtype=np.float64)
        w = np.ones_like(a) if wa is None else np.asarray(wa, dtype=np.float64)
        mean = np.average(a, weights=w)
        std = math.sqrt(float(np.average((a - mean) ** 2, weights=w)))
    return dist / max(std, 0.001)


def _share_vectors(p: Mapping[str, float], q: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(p) | set(q))
    pv = np.array([float(p.get(k, 0)) for k in keys])
    qv = np.array([float(q.get(k, 0)) for k in keys])
    return pv / pv.sum(), qv / qv.sum()


def js_distance(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (natural log) between two category count mappings."""
    return _js_of_shares(*_share_vectors(p, q))


@functools.lru_cache(maxsize=64)
def _bin_key_order(n: int) -> np.ndarray:
    """The order :func:`js_distance` visits bins ``0..n-1`` named ``str(i)`` (sorted as strings)."""
    return np.array(sorted(range(n), key=str), dtype=np.int64)


def _js_of_bins(ref: np.ndarray, cur: np.ndarray) -> float:
    """:func:`js_distance` of two count vectors over the same bins, named by their index
    (without building the mappings; the same order of operations, so the same float)."""
    order = _bin_key_order(ref.size)
    pv = np.asarray(ref, dtype=np.float64)[order]
    qv = np.asarray(cur, dtype=np.float64)[order]
    return _js_of_shares(pv / pv.sum(), qv / qv.sum())


_sum = np.add.reduce  # np.sum of a 1-D array without its Python-level dispatch (the same reduction)


def _js_of_shares(pv: np.ndarray, qv: np.ndarray) -> float:
    m = (pv + qv) / 2.0
    nz = pv > 0
    x = pv[nz]
    kl_p = float(_sum(x * np.log(x / m[nz])))
    nz = qv > 0
    x = qv[nz]
    kl_q = float(_sum(x * np.log(x / m[nz])))
    return math.sqrt(max((kl_p + kl_q) / 2.0, 0.0))


def chisquare_pvalue(ref: Mapping[str, float], cur: Mapping[str, float], epsilon: float = 1e-4) -> float:
    """p-value of the chi-square test of ``cur`` counts against ``ref`` shares (empty shares smoothed)."""
    rv, _ = _share_vectors(ref, cur)
    keys = sorted(set(ref) | set(cur))
    observed = np.array([float(cur.get(k, 0)) for k in keys])
    return _chisquare_of(rv, observed, epsilon)


def _chisquare_of(ref_shares: np.ndarray, observed: np.ndarray, epsilon: float) -> float:
    """:func:`chisquare_pvalue` of counts ``observed`` against ``ref_shares`` (the same keys, in order)."""
    expected = np.where(ref_shares > 0, ref_shares, epsilon) * observed.sum()
    stat = float(np.sum((observed - expected) ** 2 / expected))
    dof = max(observed.size - 1, 1)
    return float(chdtrc(dof, stat))  # what scipy.stats.chi2.sf computes


def _categorical_js_and_chisquare(ref: Mapping[str, float], cur: Mapping[str, float], epsilon: float, *, chisquare: bool) -> tuple[float, float | None]:
    """:func:`js_distance` and (when asked) :func:`chisquare_pvalue` of the same two count
    mappings, their shared keys and share vectors built once."""
    keys = sorted(set(ref) | set(cur))
    pv = np.array([float(ref.get(k, 0)) for k in keys])
    qv = np.array([float(cur.get(k, 0)) for k in keys])
    rv = pv / pv.sum()
    js = _js_of_shares(rv, qv / qv.sum())
    return js, (_chisquare_of(rv, qv, epsilon) if chisquare else None)


def psi_level(value: float | None, cfg: DriftConfig) -> str | None:
    """``none``, ``moderate`` (>= psi_moderate) or ``significant`` (>= psi_significant)."""
    if value is None:
        return None
    if value >= cfg.psi_significant:
        return "significant"
    if value >= cfg.psi_moderate:
        return "moderate"
    return "none"


def confidence_level(rel: float | None, cfg: DriftConfig) -> str | None:
    """``none``, ``minor`` (>= 5%), ``moderate`` (>= 10%) or ``significant`` (>= 15%)."""
    if rel is None:
        return None
    minor, moderate, significant = cfg.confidence_levels
    if rel >= significant:
        return "significant"
    if rel >= moderate:
        return "moderate"
    if rel >= minor:
        return "minor"
    return "none"


def choose_method(kind: str, n_reference: int, n_unique: int, cfg: DriftConfig) -> str:
    """Evidently's automatic choice of a drift method for one feature."""
    small = n_reference <= cfg.auto_small_reference
    numeric = kind == "numeric" and n_unique > 5
    if small:
        return "ks" if numeric else "chisquare"
    return "wasserstein" if numeric else "jensenshannon"


# ---------------------------------------------------------------------------------
# reference profiles
# ---------------------------------------------------------------------------------
def exact_edges(values: np.ndarray, counts: np.ndarray, bins: int) -> np.ndarray:
    """:func:`quantile_edges` of the multiset ``values`` (sorted, distinct) x ``counts``, without expanding it."""
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.unique(np.array([weighted_quantile(values, counts, float(q)) for q in qs], dtype=np.float64))


def distribution_grid(tops: np.ndarray, masses: np.ndarray, single: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Coarsen a sorted partition of a distribution into at most about ``cells`` cells.

    ``tops`` are the largest values of consecutive leaves, ``masses`` their counts and
    ``single`` whether a leaf holds one distinct value.  A cell ends at the first leaf
    where the cumulative count reaches the next multiple of ``n / cells``; it is
    represented by its top value and its count, so the ECDF is exact at every point.
    Returns the points, their counts and the KS tolerance: the largest share of a cell
    that lies strictly below its point (0 where every cell is one value).

    >>> distribution_grid(np.array([1.0, 2, 3, 4]), np.array([1, 1, 1, 1]), np.array([True] * 4), 2)
    (array([2., 4.]), array([2., 2.]), 0.25)
    """
    n = float(masses.sum())
    cum = np.cumsum(masses)
    marks = np.arange(1, cells + 1, dtype=np.float64) * (n / cells)
    ends = np.unique(np.minimum(np.searchsorted(cum, marks, side="left"), tops.size - 1))
    starts = np.concatenate([[0], ends[:-1] + 1])
    cell_mass = cum[ends] - np.concatenate([[0.0], cum[ends[:-1]]])
    below = cell_mass - np.where(single[ends], masses[ends], 0.0)  # what is not exactly at the point
    below = np.where((ends == starts) & single[ends], 0.0, below)
    return tops[ends].astype(np.float64), cell_mass.astype(np.float64), float(below.max() / n) if n else 0.0


@dataclass(slots=True)
class FeatureProfile:
    """One feature of the reference: exact PSI bins and counts plus its distribution (numeric),
    or category counts.

    ``support`` and ``weights`` are the exact distinct values and counts when ``exact``,
    else grid points with the exact count of each grid cell (``ks_tolerance`` bounds the
    KS error).
    """

    name: str
    kind: str
    edges: np.ndarray = field(default_factory=lambda: _NONE)
    counts: np.ndarray = field(default_factory=lambda: _NONE)
    categories: dict[str, int] = field(default_factory=dict)
    count: int = 0
    mean: float | None = None
    std: float | None = None
    support: np.ndarray = field(default_factory=lambda: _NONE)
    weights: np.ndarray = field(default_factory=lambda: _NONE)
    exact: bool = True
    ks_tolerance: float = 0.0

    @property
    def n(self) -> int:
        return self.count if self.kind == "numeric" else sum(self.categories.values())

    @classmethod
    def numeric(cls, name: str, sketch: QuantileSketch, drift: DriftConfig) -> FeatureProfile:
        """From a window sketch (exact unless it overflowed ``window_exact_values``)."""
        mean = sketch.mean
        std = math.sqrt(max(sketch.total_sq / sketch.count - mean * mean, 0.0)) if mean is not None else None
        if sketch.exact:
            return cls.from_multiset(name, sketch.values, sketch.counts, drift, mean=mean, std=std)  # type: ignore[arg-type]
        vals, w = sketch.weighted()  # bucket representatives: approximate, flagged
        edges = np.unique(np.array(sketch.quantiles(np.linspace(0.0, 1.0, drift.psi_bins + 1)[1:-1]), dtype=np.float64))
        return cls(
            name=name, kind="numeric", edges=edges, counts=bin_counts(edges, vals, w), count=sketch.count,
            mean=mean, std=std, support=vals, weights=w, exact=False, ks_tolerance=math.nan,
        )  # fmt: skip

    @classmethod
    def from_multiset(cls, name: str, values: np.ndarray, counts: np.ndarray, drift: DriftConfig, *, mean: float | None, std: float | None) -> FeatureProfile:
        """From the exact reference values (sorted, distinct) and their counts."""
        edges = exact_edges(values, counts, drift.psi_bins)
        bins = bin_counts(edges, values, counts.astype(np.float64))
        return cls._of(name, edges, bins, values, counts.astype(np.float64), np.ones(values.size, dtype=bool), drift, count=int(counts.sum()), mean=mean, std=std)

    @classmethod
    def from_scan(cls, name: str, scan: ColumnScan, drift: DriftConfig) -> FeatureProfile:
        """From a finished :class:`~driftline.operators.aggregate.reference.ColumnScan` (``driftline profile``)."""
        edges = scan.edges()
        tops, masses, single = scan.leaf_arrays()
        bins = bin_counts(edges, tops, masses) if scan.bin_counts is None else scan.bin_counts.astype(np.float64)
        return cls._of(name, edges, bins, tops, masses, single, drift, count=scan.count, mean=scan.mean, std=scan.std)

    @classmethod
    def _of(
        cls, name: str, edges: np.ndarray, bins: np.ndarray, tops: np.ndarray, masses: np.ndarray, single: np.ndarray, drift: DriftConfig, *,
        count: int, mean: float | None, std: float | None,
    ) -> FeatureProfile:  # fmt: skip
        """The distribution is kept exactly when it is a small set of values, else as a grid."""
        if bool(single.all()) and tops.size <= drift.reference_exact_values:
            support, weights, tol, exact = tops, masses, 0.0, True
            mean = float(np.average(tops, weights=masses))
            std = math.sqrt(float(np.average((tops - mean) ** 2, weights=masses)))
        else:
            support, weights, tol = distribution_grid(tops, masses, single, 2 * drift.reference_grid_points)
            exact = False
        return cls(
            name=name, kind="numeric", edges=edges, counts=np.asarray(bins, dtype=np.float64), count=count, mean=mean, std=std,
            support=np.asarray(support, dtype=np.float64), weights=np.asarray(weights, dtype=np.float64), exact=exact, ks_tolerance=tol,
        )  # fmt: skip

    def merge(self, other: FeatureProfile) -> None:
        """Add ``other``'s counts (same bins; exact distributions) to this profile."""
        if self.kind != other.kind or not np.array_equal(self.edges, other.edges):
            raise ValueError(f"cannot merge profiles of {self.name!r}: different kinds or bins")
        if self.kind == "numeric":
            if not (self.exact and other.exact):
                raise ValueError(f"cannot merge profiles of {self.name!r}: only exact distributions merge")
            self.counts = self.counts + other.counts
            vals, cnt = self.support, self.weights.astype(np.int64)
            ov, oc = other.support, other.weights.astype(np.int64)
            merged_v, merged_c = merge_counts(vals, cnt, ov, oc)
            n = self.count + other.count
            m = ((self.mean or 0.0) * self.count + (other.mean or 0.0) * other.count) / n if n else None
            if m is not None:
                var = (self.count * ((self.std or 0.0) ** 2 + ((self.mean or 0.0) - m) ** 2) + other.count * ((other.std or 0.0) ** 2 + ((other.mean or 0.0) - m) ** 2)) / n
                self.std = math.sqrt(var)
            self.mean, self.count = m, n
            self.support, self.weights = merged_v, merged_c.astype(np.float64)
        for k, c in other.categories.items():
            self.categories[k] = self.categories.get(k, 0) + c

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "categories": self.categories,
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "support": self.support.tolist(),
            "weights": self.weights.tolist(),
            "exact": self.exact,
            "ks_tolerance": None if math.isnan(self.ks_tolerance) else self.ks_tolerance,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureProfile:
        tol = d.get("ks_tolerance")
        return cls(
            name=str(d["name"]),
            kind=str(d["kind"]),
            edges=np.asarray(d.get("edges", []), dtype=np.float64),
            counts=np.asarray(d.get("counts", []), dtype=np.float64),
            categories={str(k): int(v) for k, v in d.get("categories", {}).items()},
            count=int(d.get("count", 0)),
            mean=d.get("mean"),
            std=d.get("std"),
            support=np.asarray(d.get("support", []), dtype=np.float64),
            weights=np.asarray(d.get("weights", []), dtype=np.float64),
            exact=bool(d.get("exact", True)),
            ks_tolerance=math.nan if tol is None else float(tol),
        )


@dataclass(slots=True)
class ReferenceProfile:
    """The reference one key's windows are compared with."""

    reference_id: str
    features: dict[str, FeatureProfile] = field(default_factory=dict)
    confidence_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference_id": self.reference_id,
            "confidence_mean": self.confidence_mean,
            "features": {k: v.to_dict() for k, v in self.features.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        return cls(
            reference_id=str(d["reference_id"]),
            confidence_mean=d.get("confidence_mean"),
            features={k: FeatureProfile.from_dict(v) for k, v in d.get("features", {}).items()},
        )


def monitored_features(cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None) -> list[DriftFeature]:
    """The configured features plus model confidence (numeric) and label (categorical) when enabled."""
    out = list(cfg.drift.features if features is None else features)
    if cfg.drift.include_confidence:
        names = {f.name for f in out}
        if cfg.columns.confidence not in names:
            out.append(DriftFeature(name=cfg.columns.confidence, kind="numeric"))
        if cfg.columns.label not in names:
            out.append(DriftFeature(name=cfg.columns.label, kind="categorical"))
    return out


def _feature_values(acc: WindowAccumulator, f: DriftFeature, cfg: MonitoringConfig) -> QuantileSketch | CategoryCounts | None:
    if f.name == cfg.columns.confidence and f.kind == "numeric":
        return acc.confidence
    if f.name == cfg.columns.label and f.kind != "numeric":
        return acc.labels
    if f.kind == "numeric":
        return acc.numeric.get(f.name)
    return acc.categorical.get(f.name)


def build_profile(acc: WindowAccumulator, reference_id: str, cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None) -> ReferenceProfile:
    """Freeze an accumulator (merged reference windows or historical data) into a profile."""
    prof = ReferenceProfile(reference_id=reference_id, confidence_mean=acc.confidence.mean)
    for f in monitored_features(cfg, features):
        vals = _feature_values(acc, f, cfg)
        if vals is None:
            continue
        if isinstance(vals, QuantileSketch):
            if vals.count:
                prof.features[f.name] = FeatureProfile.numeric(f.name, vals, cfg.drift)
        elif vals.total:
            prof.features[f.name] = FeatureProfile(name=f.name, kind=f.kind, categories=dict(vals.counts))
    return prof


@dataclass(frozen=True, slots=True)
class _NumericReference:
    """The parts of PSI, JS, chi-square and the ECDFs that depend on a numeric reference
    only, computed once per reference with the operations :func:`psi`, :func:`_js_of_bins`,
    :func:`_chisquare_of` and :func:`_ecdf_pair` apply to it (so every window's figures
    are the same floats)."""

    edges: np.ndarray
    psi_shares: np.ndarray
    js_order: np.ndarray
    js_shares: np.ndarray
    support: np.ndarray
    ecdf: np.ndarray

    @classmethod
    def of(cls, ref: FeatureProfile, epsilon: float) -> _NumericReference:
        r = np.asarray(ref.counts, dtype=np.float64)
        r = r / r.sum()
        order = _bin_key_order(ref.counts.size)
        pv = np.asarray(ref.counts, dtype=np.float64)[order]
        pv = pv / pv.sum()
        a = np.asarray(ref.support, dtype=np.float64)
        wa = np.asarray(ref.weights, dtype=np.float64)
        oa = np.argsort(a, kind="stable")
        a, wa = a[oa], wa[oa]
        ca = np.concatenate([[0.0], np.cumsum(wa)]) / wa.sum()
        edges = np.asarray(ref.edges, dtype=np.float64)
        return cls(edges, np.where(r > 0, r, epsilon), order, pv, a, ca)

    def psi(self, cur_counts: np.ndarray, epsilon: float) -> float:
        """:func:`psi` of ``cur_counts`` against the reference's bins."""
        c = np.asarray(cur_counts, dtype=np.float64)
        c = c / c.sum()
        c = np.where(c > 0, c, epsilon)
        return float(np.sum((c - self.psi_shares) * np.log(c / self.psi_shares)))

    def js(self, cur_counts: np.ndarray) -> float:
        """:func:`_js_of_bins` of ``cur_counts`` against the reference's bins."""
        qv = np.asarray(cur_counts, dtype=np.float64)[self.js_order]
        return _js_of_shares(self.js_shares, qv / qv.sum())

    def chisquare(self, cur_counts: np.ndarray, epsilon: float) -> float:
        """:func:`chisquare_pvalue` over the bins named by their index (as :func:`compare` names them)."""
        observed = np.asarray(cur_counts, dtype=np.float64)[self.js_order]
        return _chisquare_of(self.js_shares, observed, epsilon)

    def ks_and_wasserstein(self, b: np.ndarray, wb: np.ndarray, std: float) -> tuple[float, float]:
        """:func:`_ks_and_wasserstein` of the window's values ``b`` (weights ``wb``) against the reference."""
        b = np.asarray(b, dtype=np.float64)
        wb = np.asarray(wb, dtype=np.float64)
        ob = np.argsort(b, kind="stable")
        b, wb = b[ob], wb[ob]
        return self._ks_w_sorted(b, wb, wb.sum(), std)

    def window(self, b: np.ndarray, wb: np.ndarray, std: float, epsilon: float, *, chisquare: bool) -> tuple[float, float, float, float, float | None]:
        """PSI, KS, normed Wasserstein, JS and (when asked) the chi-square p-value of a
        window's values ``b`` (sorted ascending, as :meth:`QuantileSketch.weighted` gives
        them) with integer counts ``wb``: the same floats as :func:`bin_counts` followed by
        :meth:`psi`, :meth:`ks_and_wasserstein`, :meth:`js` and :meth:`chisquare`, with the
        bins, shares and total computed once (sums of integer counts are exact in any order)."""
        cur = np.bincount(self.edges.searchsorted(b, side="right"), weights=wb, minlength=self.edges.size + 1)
        total = _sum(cur)
        shares = cur / total
        c = np.where(shares > 0, shares, epsilon)
        psi_value = float(_sum((c - self.psi_shares) * np.log(c / self.psi_shares)))
        ks, w = self._ks_w_sorted(b, wb, total, std)
        js = _js_of_shares(self.js_shares, shares[self.js_order])
        chi = self.chisquare(cur, epsilon) if chisquare else None
        return psi_value, ks, w, js, chi

    def _ks_w_sorted(self, b: np.ndarray, wb: np.ndarray, total: float, std: float) -> tuple[float, float]:
        a = self.support
        grid = np.concatenate((a, b))
        grid.sort()
        if grid.size > 1:
            grid = grid[np.concatenate(([True], grid[1:] != grid[:-1]))]  # np.unique's steps
        cb = np.empty(b.size + 1)
        cb[0] = 0.0
        np.cumsum(wb, out=cb[1:])
        cb /= total
        gap = np.abs(self.ecdf[a.searchsorted(grid, side="right")] - cb[b.searchsorted(grid, side="right")])
        dist = float(_sum(gap[:-1] * (grid[1:] - grid[:-1]))) if grid.size > 1 else 0.0
        return float(gap.max()), dist / max(std, 0.001)


#: a KS entry whose p-value is pending: (the compare result holding it, the entry, reference size, window size)
PendingKS = tuple[dict[str, Any], dict[str, Any], float, float]

@dataclass(frozen=True, slots=True)
class _CategoricalReference:
    """A categorical reference's sorted categories and shares, computed once with the
    operations :func:`_categorical_js_and_chisquare` applies to them."""

    keys: list[str]
    key_set: frozenset[str]
    counts: np.ndarray
    shares: np.ndarray

    @classmethod
    def of(cls, ref: FeatureProfile, epsilon: float) -> _CategoricalReference:
        keys = sorted(ref.categories)
        pv = np.array([float(ref.categories[k]) for k in keys])
        return cls(keys, frozenset(keys), pv, pv / pv.sum())

    def js_and_chisquare(self, ref: Mapping[str, float], cur: Mapping[str, float], epsilon: float, *, chisquare: bool) -> tuple[float, float | None]:
        """:func:`_categorical_js_and_chisquare` of ``cur`` against the reference ``ref``
        (the same floats: a window without new categories has the reference's keys)."""
        if not self.key_set.issuperset(cur):
            return _categorical_js_and_chisquare(ref, cur, epsilon, chisquare=chisquare)
        qv = np.array([float(cur.get(k, 0)) for k in self.keys])
        js = _js_of_shares(self.shares, qv / qv.sum())
        return js, (_chisquare_of(self.shares, qv, epsilon) if chisquare else None)


#: per-reference parts, by ``id`` of the FeatureProfile (held, so the id stays its own) and PSI epsilon
ReferenceParts = dict[int, tuple[FeatureProfile, float, Any]]


def _numeric_reference(ref: FeatureProfile, epsilon: float, parts: ReferenceParts | None) -> _NumericReference:
    return _reference_parts(_NumericReference, ref, epsilon, parts)  # type: ignore[no-any-return]


def _reference_parts(kind: Any, ref: FeatureProfile, epsilon: float, parts: ReferenceParts | None) -> Any:
    """``kind.of(ref, epsilon)``, kept in ``parts`` (when given) for the next windows."""
    if parts is None:
        return kind.of(ref, epsilon)
    got = parts.get(id(ref))
    if got is None or got[0] is not ref or got[1] != epsilon or not isinstance(got[2], kind):
        got = parts[id(ref)] = (ref, epsilon, kind.of(ref, epsilon))
    return got[2]


def compare(
    profile: ReferenceProfile,
    acc: WindowAccumulator,
    cfg: MonitoringConfig,
    features: Sequence[DriftFeature] | None = None,
    *,
    parts: ReferenceParts | None = None,
    ks_pending: list[PendingKS] | None = None,
) -> dict[str, Any]:
    """Drift columns of a metrics row: one entry per monitored feature plus the maxima.

    ``parts`` keeps each numeric reference's window-independent parts between calls
    (a :class:`DriftMonitor` passes its own); the figures are the same without it.
    With ``ks_pending`` the KS p-values are left to the caller: the KS entries are
    appended to it and :func:`fill_ks_pvalues` completes them and ``drifted_features``
    (so several windows' p-values cost one scipy call); without it they are filled here.
    """
    d = cfg.drift
    entries: list[dict[str, Any]] = []
    pending_ks: list[tuple[dict[str, Any], float, float]] = []  # (entry, n, m): p-values computed together below
    for f in monitored_features(cfg, features):
        ref = profile.features.get(f.name)
        cur = _feature_values(acc, f, cfg)
        if ref is None or cur is None:
            continue
        e: dict[str, Any] = {"feature": f.name, "kind": f.kind, "psi": None, "psi_level": None, "ks": None, "wasserstein": None, "js": None}  # fmt: skip
        chi: float | None = None  # the chi-square p-value, when that is the method
        if isinstance(cur, QuantileSketch):
            if cur.count < d.min_window_values or ref.kind != "numeric" or not ref.support.size:
                continue
            cv, cw = cur.weighted()
            side = _numeric_reference(ref, d.psi_epsilon, parts)
            method = f.method if f.method != "auto" else choose_method("numeric", ref.n, len(ref.support), d)
            e["n"] = cur.count
            if ref.std is None:
                cur_bins = bin_counts(ref.edges, cv, cw)
                e["psi"] = side.psi(cur_bins, d.psi_epsilon)
                e["ks"], e["wasserstein"] = _ks_and_wasserstein(ref.support, cv, ref.weights, cw, None)
                e["js"] = side.js(cur_bins)
                if method == "chisquare":  # over the PSI bins, named by their index
                    chi = side.chisquare(cur_bins, d.psi_epsilon)
            else:
                e["psi"], e["ks"], e["wasserstein"], e["js"], chi = side.window(cv, cw, ref.std, d.psi_epsilon, chisquare=method == "chisquare")
            e["psi_level"] = psi_level(e["psi"], d)
            e["exact"] = bool(ref.exact and cur.exact)
            e["ks_tolerance"] = ref.ks_tolerance if cur.exact and not math.isnan(ref.ks_tolerance) else None
        else:
            if cur.total < d.min_window_values:
                continue
            method = f.method if f.method != "auto" else choose_method("categorical", ref.n, len(ref.categories), d)
            e["n"] = cur.total
            side_c: _CategoricalReference = _reference_parts(_CategoricalReference, ref, d.psi_epsilon, parts)
            e["js"], chi = side_c.js_and_chisquare(ref.categories, cur.counts, d.psi_epsilon, chisquare=method == "chisquare")
            e["exact"] = OTHER not in cur.counts and OTHER not in ref.categories
            e["ks_tolerance"] = None
        threshold = f.threshold if f.threshold is not None else DEFAULT_THRESHOLDS.get(method, 0.1)
        if method == "psi":
            score = e["psi"]
        elif method == "ks":
            score = math.nan  # filled below, with the other features' p-values
            pending_ks.append((e, float(ref.n), float(cur.count)))  # type: ignore[union-attr]
        elif method == "wasserstein":
            score = e["wasserstein"]
        elif method == "jensenshannon":
            score = e["js"]
        else:  # chisquare
            score = chi
        if score is None:
            continue
        e.update(method=method, score=score, threshold=threshold, drifted=(score < threshold) if method in P_VALUE_METHODS else (score >= threshold))
        entries.append(e)
    def top(stat: str) -> float | None:
        vals = [e[stat] for e in entries if e.get(stat) is not None]
        return max(vals) if vals else None

    rel = None
    cur_mean = acc.confidence.mean
    if profile.confidence_mean and cur_mean is not None and acc.confidence.count >= d.min_window_values:
        rel = abs(cur_mean - profile.confidence_mean) / abs(profile.confidence_mean)
    out = {
        "reference_id": profile.reference_id,
        "psi_max": top("psi"),
        "ks_max": top("ks"),
        "js_max": top("js"),
        "drifted_features": sum(1 for e in entries if e["drifted"]),  # KS entries count once their p-value is known
        "confidence_drift_rel": rel,
        "confidence_drift_level": confidence_level(rel, d),
        "drift": entries,
    }
    if pending_ks:
        own = [(out, e, n, m) for e, n, m in pending_ks]
        if ks_pending is None:
            fill_ks_pvalues(own)
        else:
            ks_pending.extend(own)
    return out


def fill_ks_pvalues(pending: Sequence[PendingKS]) -> None:
    """Complete the KS entries :func:`compare` left pending: their p-value (``score``),
    ``drifted``, and the ``drifted_features`` count of their result, with one
    :func:`ks_pvalues` call for all of them."""
    if not pending:
        return
    stats = ks_pvalues([e["ks"] for _, e, _, _ in pending], [n for _, _, n, _ in pending], [m for _, _, _, m in pending]).tolist()
    for (out, e, _n, _m), p in zip(pending, stats):
        e["score"], e["drifted"] = p, p < e["threshold"]
        if e["drifted"]:
            out["drifted_features"] += 1


# ---------------------------------------------------------------------------------
# profile files
# ---------------------------------------------------------------------------------
@dataclass(slots=True)
class ProfileFile:
    """Reference profiles per key (``source=a|model=b``) plus ``*`` for every key, as JSON."""

    key_dims: list[str]
    profiles: dict[str, ReferenceProfile]
    built_at: str = ""
    sources: list[str] = field(default_factory=list)
    rows: int = 0

    def for_key(self, key: str) -> ReferenceProfile | None:
        return self.profiles.get(key) or self.profiles.get("*")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": PROFILE_FORMAT,
                "built_at": self.built_at,
                "sources": self.sources,
                "rows": self.rows,
                "key_dims": self.key_dims,
                "profiles": {k: v.to_dict() for k, v in self.profiles.items()},
            },
            sort_keys=True,
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), "utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ProfileFile:
        """Read a profile file; the reference ids carry the file's content hash."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"reference profile not found: {p} (monitoring.drift.profile_path)")
        text = p.read_text("utf-8")
        data = json.loads(text)
        if data.get("format") != PROFILE_FORMAT:
            hint = "; rebuild it with `driftline profile`" if str(data.get("format", "")).startswith("driftline-profile/") else ""
            raise ValueError(f"{p}: not a {PROFILE_FORMAT} file (format={data.get('format')!r}){hint}")
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        profiles = {}
        for k, v in data["profiles"].items():
            prof = ReferenceProfile.from_dict(v)
            prof.reference_id = f"profile:{digest}:{k}"
            profiles[k] = prof
        return cls(key_dims=list(data["key_dims"]), profiles=profiles, built_at=data.get("built_at", ""), sources=data.get("sources", []), rows=int(data.get("rows", 0)))


# ---------------------------------------------------------------------------------
# the stateful drift step
# ---------------------------------------------------------------------------------
@dataclass(slots=True)
class DriftState:
    """Snapshot-able state: warm-up accumulators and frozen references per key."""

    warmup: dict[str, WindowAccumulator] = field(default_factory=dict)
    warmup_windows: dict[str, int] = field(default_factory=dict)
    warmup_first: dict[str, str] = field(default_factory=dict)
    references: dict[str, ReferenceProfile] = field(default_factory=dict)


class DriftMonitor:
    """Adds drift columns to each window's metrics row.

    In ``warmup`` mode the first ``drift.warmup_windows`` windows of a key are merged into
    its reference (their rows keep null drift columns; the merge stays exact while it holds
    at most ``warmup_windows x window_exact_values`` distinct values); in ``profile`` mode
    references come from the profile file (key first, then ``*``), loaded once by the
    caller and shared read-only (or loaded here when not given).
    """

    def __init__(
        self,
        cfg: MonitoringConfig,
        features: Sequence[DriftFeature] | None = None,
        state: DriftState | None = None,
        *,
        profile_file: ProfileFile | None = None,
    ) -> None:
        self.cfg = cfg
        self.features = list(cfg.drift.features if features is None else features)
        self.state = state or DriftState()
        self.profile_file = profile_file
        self._monitored = monitored_features(cfg, self.features)  # built once, not per window
        self._parts: ReferenceParts = {}
        if cfg.drift.reference == "profile" and profile_file is None:
            assert cfg.drift.profile_path
            self.profile_file = ProfileFile.load(cfg.drift.profile_path)

    def reference_for(self, key: str) -> ReferenceProfile | None:
        if self.profile_file is not None:
            return self.profile_file.for_key(key)
        return self.state.references.get(key)

    def on_window(self, row: dict[str, Any], acc: WindowAccumulator, ks_pending: list[PendingKS] | None = None) -> dict[str, Any]:
        """Return ``row`` with its drift columns filled (or null while warming up).

        With ``ks_pending``, the KS p-values are left for :func:`fill_ks_pvalues` (see :func:`compare`)."""
        key = row["key"]
        ref = self.reference_for(key)
        if ref is not None:
            pending: list[PendingKS] | None = None if ks_pending is None else []
            row.update(compare(ref, acc, self.cfg, self._monitored, parts=self._parts, ks_pending=pending))
            if pending:  # the entries now count in ``row``, which is what they must update
                ks_pending.extend((row, e, n, m) for _, e, n, m in pending)  # type: ignore[union-attr]
            return row
        if self.profile_file is None:
            st = self.state
            n = st.warmup_windows.get(key, 0) + 1
            st.warmup_windows[key] = n
            st.warmup_first.setdefault(key, row["window_start"].isoformat())
            base = st.warmup.get(key)
            if base is None:
                base = WindowAccumulator.empty(self.cfg, drift_limit=self.cfg.drift.window_exact_values * self.cfg.drift.warmup_windows)
            merged = base.merge(acc)
            if n >= self.cfg.drift.warmup_windows:
                rid = f"warmup:{key}:{st.warmup_first[key]}/{row['window_end'].isoformat()}"
                st.references[key] = build_profile(merged, rid, self.cfg, self.features)
                st.warmup.pop(key, None)
            else:
                st.warmup[key] = merged
        return row


def profile_from_accumulators(
    accs: Mapping[str, WindowAccumulator], cfg: MonitoringConfig, *, sources: Sequence[str] = (), rows: int = 0, features: Sequence[DriftFeature] | None = None
) -> ProfileFile:
    """A :class:`ProfileFile` from one accumulator per key string (``*`` for all keys)."""
    built = datetime.now(timezone.utc).isoformat()
    profiles = {k: build_profile(acc, f"profile:{k}", cfg, features) for k, acc in accs.items()}
    return ProfileFile(key_dims=list(cfg.key_dims), profiles=profiles, built_at=built, sources=list(sources), rows=rows)


__all__ = [
    "DriftMonitor",
    "DriftState",
    "FeatureProfile",
    "ProfileFile",
    "ReferenceProfile",
    "bin_counts",
    "build_profile",
    "chisquare_pvalue",
    "choose_method",
    "compare",
    "fill_ks_pvalues",
    "confidence_level",
    "js_distance",
    "key_string",
    "ks_pvalue",
    "ks_pvalues",
    "ks_statistic",
    "monitored_features",
    "profile_from_accumulators",
    "psi",
    "psi_level",
    "quantile_edges",
    "wasserstein_normed",
]
