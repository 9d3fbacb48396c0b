"""Mergeable, bounded-memory summaries of a window's values.

:class:`QuantileSketch` keeps the values themselves while a window is small (quantiles
are then exact, numpy's ``linear`` definition) and switches to logarithmic buckets in
the manner of DDSketch once it holds more than ``exact_limit`` values: a value ``v`` goes
to bucket ``ceil(log_gamma(|v|))`` with ``gamma = (1 + a) / (1 - a)``, so every quantile
is answered with at most ``a`` relative error (default 1%).  Buckets are a dict of
counts; more than ``max_buckets`` collapses the lowest ones, which bounds memory.

The result never depends on the order values arrive in or on how they were split
before merging: exact mode is a multiset, bucket mode is a sum of counts.

:class:`CategoryCounts` counts categories, exactly while there are at most ``cap``
distinct ones; beyond it the rarest are folded into ``__other__``.

>>> s = QuantileSketch(exact_limit=4)
>>> s.add(np.array([1.0, 2.0, 3.0, 4.0]))
>>> s.quantile(0.5), s.exact
(2.5, True)
>>> s.add(np.array([100.0]))
>>> s.exact, abs(s.quantile(1.0) - 100.0) <= 1.0
(False, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OTHER = "__other__"
_MIN_ABS = 1e-9  # |v| below this counts as zero


@dataclass(slots=True)
class QuantileSketch:
    """Exact values while small, then DDSketch-style log buckets (``relative_accuracy``)."""

    exact_limit: int = 1024
    relative_accuracy: float = 0.01
    max_buckets: int = 4096
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    values: np.ndarray | None = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)
    zeros: int = 0

    # -- building ---------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """True while the sketch still holds every value."""
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
        if self.values is not None:
            self.values = np.concatenate([self.values, v])
            if self.values.size > self.exact_limit:
                held, self.values = self.values, None
                self._bucket(held)
        else:
            self._bucket(v)

    def _bucket(self, v: np.ndarray) -> None:
        lg = self._log_gamma
        zero = np.abs(v) < _MIN_ABS
        self.zeros += int(zero.sum())
        for sign_mask, store in ((v >= _MIN_ABS, self.pos), (v <= -_MIN_ABS, self.neg)):
            part = np.abs(v[sign_mask & ~zero])
            if part.size:
                idx, cnt = np.unique(np.ceil(np.log(part) / lg).astype(np.int64), return_counts=True)
                for i, c in zip(idx.tolist(), cnt.tolist()):
                    store[i] = store.get(i, 0) + c
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
        if self.values is not None and other.values is not None and self.values.size + other.values.size <= self.exact_limit:
            self.values = np.concatenate([self.values, other.values])
            return
        if self.values is not None:
            held, self.values = self.values, None
            self._bucket(held)
        if other.values is not None:
            self._bucket(other.values)
        else:
            self.zeros += other.zeros
            for src, dst in ((other.pos, self.pos), (other.neg, self.neg)):
                for k, c in src.items():
                    dst[k] = dst.get(k, 0) + c
            self._collapse()

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
            vals, cnt = np.unique(self.values, return_counts=True)
            return vals, cnt.astype(np.float64)
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
        """The ``q`` quantile: exact (linear interpolation) while small, else within the relative accuracy."""
        if self.count == 0:
            return None
        if self.values is not None:
            return float(np.quantile(self.values, q))
        if q <= 0:
            return self.min
        if q >= 1:
            return self.max
        vals, cnts = self.weighted()
        rank = q * (self.count - 1)
        pos = int(np.searchsorted(np.cumsum(cnts), rank, side="right"))
        return float(vals[min(pos, len(vals) - 1)])

    def quantiles(self, qs: list[float] | np.ndarray) -> list[float | None]:
        return [self.quantile(float(q)) for q in qs]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (for reference profile files)."""
        return {
            "exact_limit": self.exact_limit,
            "relative_accuracy": self.relative_accuracy,
            "count": self.count,
            "total": self.total,
            "total_sq": self.total_sq,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "values": None if self.values is None else self.values.tolist(),
            "pos": {str(k): c for k, c in self.pos.items()},
            "neg": {str(k): c for k, c in self.neg.items()},
            "zeros": self.zeros,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileSketch:
        return cls(
            exact_limit=int(d["exact_limit"]),
            relative_accuracy=float(d["relative_accuracy"]),
            count=int(d["count"]),
            total=float(d["total"]),
            total_sq=float(d["total_sq"]),
            min=math.inf if d["min"] is None else float(d["min"]),
            max=-math.inf if d["max"] is None else float(d["max"]),
            values=None if d["values"] is None else np.asarray(d["values"], dtype=np.float64),
            pos={int(k): int(c) for k, c in d["pos"].items()},
            neg={int(k): int(c) for k, c in d["neg"].items()},
            zeros=int(d["zeros"]),
        )


@dataclass(slots=True)
class CategoryCounts:
    """Counts per category; exact while at most ``cap`` distinct, else rarest folded into ``__other__``."""

    cap: int = 50
    counts: dict[str, int] = field(default_factory=dict)

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
