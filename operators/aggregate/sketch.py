"""Mergeable, bounded-memory summaries of a window's values.

:class:`QuantileSketch` keeps the values themselves, as sorted distinct values with their
counts, while it holds at most ``exact_limit`` distinct values: quantiles are then exact
(numpy's ``linear`` definition, bit for bit) and so is every statistic computed from
:meth:`QuantileSketch.weighted`.  Beyond that it switches to logarithmic buckets in the
manner of DDSketch: a value ``v`` goes to bucket ``ceil(log_gamma(|v|))`` with
``gamma = (1 + a) / (1 - a)``, so every quantile is answered with at most ``a`` relative
error (default 1%).  Buckets are a dict of counts; more than ``max_buckets`` collapses the
lowest ones, which bounds memory.

The result never depends on the order values arrive in or on how they were split
before merging: exact mode is a multiset, bucket mode is a sum of counts, and whether a
sketch is exact depends only on how many distinct values the union holds.

:class:`CategoryCounts` counts categories, exactly while there are at most ``cap``
distinct ones; beyond it the rarest are folded into ``__other__``.

>>> s = QuantileSketch(exact_limit=4)
>>> s.add(np.array([1.0, 2.0, 3.0, 4.0, 4.0]))
>>> s.quantile(0.5), s.exact, s.weighted()[1].tolist()
(3.0, True, [1.0, 1.0, 1.0, 2.0])
>>> s.add(np.array([100.0]))
>>> s.exact, abs(s.quantile(1.0) - 100.0) <= 1.0
(False, True)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

OTHER = "__other__"
_MIN_ABS = 1e-9  # |v| below this counts as zero
_EMPTY_F = np.empty(0, dtype=np.float64)
_EMPTY_I = np.empty(0, dtype=np.int64)


#: values a snapshot's copy may share with the original (immutable)
_SHARED = frozenset({int, float, str, bool, type(None), datetime})


def deepcopy_slots(obj: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy`` of a slots dataclass, field by field: immutable values are shared,
    the others deep-copied with ``memo`` (so shared references stay shared).  The same
    copy as the generic path, which rebuilds every object through ``__reduce_ex__`` and
    cost most of a window shard's snapshot."""
    cls = type(obj)
    out = cls.__new__(cls)
    memo[id(obj)] = out
    for name in cls.__slots__:
        value = getattr(obj, name)
        setattr(out, name, value if type(value) in _SHARED else copy.deepcopy(value, memo))
    return out


def lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation, operation for operation (so results are bit-identical)."""
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def weighted_quantile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.quantile(np.repeat(values, counts), q)`` (method ``linear``) without expanding.

    ``values`` sorted and distinct, ``counts`` positive integers.

    >>> v, c = np.array([1.0, 2.0, 5.0]), np.array([2, 1, 3])
    >>> [bool(weighted_quantile(v, c, q) == np.quantile(np.repeat(v, c), q)) for q in (0.0, 0.3, 0.5, 0.9, 1.0)]
    [True, True, True, True, True]
    """
    n = int(counts.sum())
    h = (n - 1) * q
    cum = np.cumsum(counts)
    if h >= n - 1:
        return float(values[-1])
    lo = math.floor(h)
    i = int(np.searchsorted(cum, lo, side="right"))
    j = int(np.searchsorted(cum, lo + 1, side="right"))
    return float(lerp(float(values[i]), float(values[j]), h - lo))


def weighted_quantiles(values: np.ndarray, counts: np.ndarray, qs: list[float]) -> list[float]:
    """:func:`weighted_quantile` of several ``qs``, the cumulative counts computed once."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    out = []
    for q in qs:
        h = (n - 1) * q
        if h >= n - 1:
            out.append(float(values[-1]))
            continue
        lo = math.floor(h)
        i = int(np.searchsorted(cum, lo, side="right"))
        j = int(np.searchsorted(cum, lo + 1, side="right"))
        out.append(float(lerp(float(values[i]), float(values[j]), h - lo)))
    return out


def merge_counts(v1: np.ndarray, c1: np.ndarray, v2: np.ndarray, c2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of two multisets given as sorted distinct values and counts."""
    if v1.size == 0:
        return v2, c2
    if v2.size == 0:
        return v1, c1
    vals, inv = np.unique(np.concatenate([v1, v2]), return_inverse=True)
    return vals, np.bincount(inv, weights=np.concatenate([c1, c2]), minlength=vals.size).astype(np.int64)


def merge_sorted_counts(v1: np.ndarray, c1: np.ndarray, v2: np.ndarray, c2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_counts` of two multisets whose values carry no ``-0.0`` (a sketch's):
    a stable sort of the two sorted runs and integer sums per value, the same arrays at
    about half the cost; when every value of the second is in the first, its counts are
    added at their places (no sort)."""
    if v1.size == 0:
        return v2, c2
    if v2.size == 0:
        return v1, c1
    if v2.size <= v1.size:  # windows of one key mostly repeat values already held: add counts in place of a merge
        at = v1.searchsorted(v2)
        if at[-1] < v1.size and bool((v1[at] == v2).all()):
            counts = c1.astype(np.int64)  # a copy: arrays are never changed in place
            counts[at] += c2
            return v1, counts
    v = np.concatenate([v1, v2])
    order = np.argsort(v, kind="stable")
    v = v[order]
    new = np.empty(v.size, dtype=bool)
    new[0] = True
    np.not_equal(v[1:], v[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return v[starts], np.add.reduceat(np.concatenate([c1, c2]).astype(np.int64, copy=False)[order], starts)


@dataclass(slots=True)
class QuantileSketch:
    """Exact distinct values and counts while small, then DDSketch-style log buckets (``relative_accuracy``)."""

    exact_limit: int = 1024
    relative_accuracy: float = 0.01
    max_buckets: int = 4096
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    values: np.ndarray | None = field(default_factory=lambda: _EMPTY_F)
    counts: np.ndarray | None = field(default_factory=lambda: _EMPTY_I)
    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)
    zeros: int = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> QuantileSketch:
        return deepcopy_slots(self, memo)  # type: ignore[no-any-return]

    # -- building ---------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """True while the sketch still holds every value (at most ``exact_limit`` distinct)."""
        return self.values is not None

    @property
    def _log_gamma(self) -> float:
        a = self.relative_accuracy
        return math.log((1 + a) / (1 - a))

    def add(self, values: np.ndarray) -> None:
        """Add a float array (NaNs are ignored)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        self.count += int(v.size)
        self.total += float(v.sum())
        self.total_sq += float(np.dot(v, v))
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        if self.values is None:
            self._bucket(v, None)
            return
        vals, cnt = np.unique(v + 0.0, return_counts=True)  # + 0.0: -0.0 and 0.0 are one value
        self._add_exact(vals, cnt.astype(np.int64))

    def add_summary(self, count: int, total: float, total_sq: float, vmin: float, vmax: float, vals: np.ndarray, cnt: np.ndarray) -> None:
        """What :meth:`add` does with values already summarized: their number, sum, sum of
        squares, min and max, and their distinct values (sorted, ``-0.0`` as ``0.0``) with counts.
        Lets a caller summarize many groups of one column at once (see ``summaries``)."""
        if count == 0:
            return
        self.count += count
        self.total += total
        self.total_sq += total_sq
        self.min = min(self.min, vmin)
        self.max = max(self.max, vmax)
        if self.values is None:
            self._bucket(vals, cnt)
            return
        self._add_exact(vals, cnt)

    def _add_exact(self, vals: np.ndarray, cnt: np.ndarray) -> None:
        if self.values is None:
            self._bucket(vals, cnt)
            return
        self.values, self.counts = merge_sorted_counts(self.values, self.counts, vals, cnt)  # type: ignore[arg-type]
        if self.values.size > self.exact_limit:
            held, held_c = self.values, self.counts
            self.values = self.counts = None
            self._bucket(held, held_c)  # type: ignore[arg-type]

    def _bucket(self, v: np.ndarray, c: np.ndarray | None) -> None:
        """Add values ``v`` (with counts ``c``, or once each) to the log buckets."""
        lg = self._log_gamma
        zero = np.abs(v) < _MIN_ABS
        self.zeros += int(zero.sum() if c is None else c[zero].sum())
        for sign_mask, store in ((v >= _MIN_ABS, self.pos), (v <= -_MIN_ABS, self.neg)):
            part = np.abs(v[sign_mask])
            if not part.size:
                continue
            ids = np.ceil(np.log(part) / lg).astype(np.int64)
            if c is None:
                idx, cnt = np.unique(ids, return_counts=True)
            else:
                idx, inv = np.unique(ids, return_inverse=True)
                cnt = np.bincount(inv, weights=c[sign_mask], minlength=idx.size)
            for i, k in zip(idx.tolist(), cnt.tolist()):
                store[i] = store.get(i, 0) + int(k)
        self._collapse()

    def _collapse(self) -> None:
        for store in (self.pos, self.neg):
            if len(store) > self.max_buckets:
                keys = sorted(store)
                drop = keys[: len(keys) - self.max_buckets + 1]
                moved = sum(store.pop(k) for k in drop)
                keep = drop[-1]
                store[keep] = store.get(keep, 0) + moved

    def merge(self, other: QuantileSketch) -> None:
        """Fold ``other`` into this sketch (same accuracy settings)."""
        if other.count == 0:
            return
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.values is not None:
            self._add_exact(other.values, other.counts)  # type: ignore[arg-type]
            return
        if self.values is not None:
            held, held_c = self.values, self.counts
            self.values = self.counts = None
            self._bucket(held, held_c)  # type: ignore[arg-type]
        self.zeros += other.zeros
        for src, dst in ((other.pos, self.pos), (other.neg, self.neg)):
            for k, c in src.items():
                dst[k] = dst.get(k, 0) + c
        self._collapse()

    def copy(self) -> QuantileSketch:
        """An independent copy (arrays are never changed in place, dicts are copied)."""
        out = QuantileSketch(exact_limit=self.exact_limit, relative_accuracy=self.relative_accuracy, max_buckets=self.max_buckets)
        out.merge(self)
        return out

    # -- reading ----------------------------------------------------------------
    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def _bucket_value(self, index: int) -> float:
        g = (1 + self.relative_accuracy) / (1 - self.relative_accuracy)
        return 2.0 * g**index / (g + 1.0)

    def weighted(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distinct values (bucket representatives in bucket mode) and their counts."""
        if self.values is not None:
            return self.values, self.counts.astype(np.float64)  # type: ignore[union-attr]
        vals: list[float] = []
        cnts: list[float] = []
        for k in sorted(self.neg, reverse=True):
            vals.append(-self._bucket_value(k))
            cnts.append(self.neg[k])
        if self.zeros:
            vals.append(0.0)
            cnts.append(self.zeros)
        for k in sorted(self.pos):
            vals.append(self._bucket_value(k))
            cnts.append(self.pos[k])
        v = np.clip(np.array(vals, dtype=np.float64), self.min, self.max)
        return v, np.array(cnts, dtype=np.float64)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile: exact (numpy ``linear``) while exact, else within the relative accuracy."""
        if self.count == 0:
            return None
        if self.values is not None:
            return weighted_quantile(self.values, self.counts, q)  # type: ignore[arg-type]
        if q <= 0:
            return self.min
        if q >= 1:
            return self.max
        vals, cnts = self.weighted()
        rank = q * (self.count - 1)
        pos = int(np.searchsorted(np.cumsum(cnts), rank, side="right"))
        return float(vals[min(pos, len(vals) - 1)])

    def quantiles(self, qs: list[float] | np.ndarray) -> list[float | None]:
        """:meth:`quantile` of each of ``qs``."""
        if self.count and self.values is not None:
            return weighted_quantiles(self.values, self.counts, [float(q) for q in qs])  # type: ignore[arg-type,return-value]
        return [self.quantile(float(q)) for q in qs]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        return {
            "exact_limit": self.exact_limit,
            "relative_accuracy": self.relative_accuracy,
            "count": self.count,
            "total": self.total,
            "total_sq": self.total_sq,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "values": None if self.values is None else self.values.tolist(),
            "counts": None if self.counts is None else self.counts.tolist(),
            "pos": {str(k): c for k, c in self.pos.items()},
            "neg": {str(k): c for k, c in self.neg.items()},
            "zeros": self.zeros,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileSketch:
        values = counts = None
        if d["values"] is not None:
            values = np.asarray(d["values"], dtype=np.float64)
            counts = np.asarray(d["counts"], dtype=np.int64)
        return cls(
            exact_limit=int(d["exact_limit"]),
            relative_accuracy=float(d["relative_accuracy"]),
            count=int(d["count"]),
            total=float(d["total"]),
            total_sq=float(d["total_sq"]),
            min=math.inf if d["min"] is None else float(d["min"]),
            max=-math.inf if d["max"] is None else float(d["max"]),
            values=values,
            counts=counts,
            pos={int(k): int(c) for k, c in d["pos"].items()},
            neg={int(k): int(c) for k, c in d["neg"].items()},
            zeros=int(d["zeros"]),
        )


@dataclass(slots=True)
class CategoryCounts:
    """Counts per category; exact while at most ``cap`` distinct, else rarest folded into ``__other__``."""

    cap: int = 50
    counts: dict[str, int] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, Any]) -> CategoryCounts:
        return deepcopy_slots(self, memo)  # type: ignore[no-any-return]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add_counts(self, pairs: dict[str, int]) -> None:
        for k, c in pairs.items():
            self.counts[k] = self.counts.get(k, 0) + int(c)
        self._bound()

    def merge(self, other: CategoryCounts) -> None:
        self.add_counts(other.counts)

    def _bound(self) -> None:
        if len(self.counts) <= self.cap:
            return
        ranked = sorted(((c, k) for k, c in self.counts.items() if k != OTHER), key=lambda ck: (-ck[0], ck[1]))
        keep = dict((k, c) for c, k in ranked[: self.cap - 1])
        keep[OTHER] = self.counts.get(OTHER, 0) + sum(c for c, _ in ranked[self.cap - 1 :])
        self.counts = keep

    def shares(self) -> dict[str, float]:
        t = self.total
        return {k: c / t for k, c in sorted(self.counts.items())} if t else {}
