"""Exact order statistics of large columns in bounded memory (reference profiles).

:class:`ColumnScan` summarizes one numeric column read in batches, as many times as it
asks for, holding a bounded amount of state whatever the number of rows:

1. the first pass keeps the count, sum, sum of squares and the exact distinct values
   with their counts, while there are at most ``exact_limit`` of them; a column that
   stays under the limit is then known exactly;
2. otherwise it locates its order statistics by *radix refinement*: every value maps to
   a 64-bit key that sorts like the float, and each further pass splits, by the next 4
   bits, the key ranges (*cells*) that still hold a target rank (a quantile edge) or more
   than ``n / (2 * grid_points)`` values, recording each child's count, minimum and
   maximum.  Within 16 passes every target rank lies in a cell of one value, so the
   quantile edges are exact; every other cell is light.  Memory: at most
   ``2 * grid_points + 2 * bins`` cells x 16 children per pass;
3. a last pass counts the values of every PSI bin exactly with the now known edges.

The light cells form the grid of the distribution (:func:`driftline.operators.drift.
distribution_grid`): its ECDF is exact at every cell's top value and off by less than
``1 / grid_points`` in between.

>>> rng = np.random.default_rng(0)
>>> data = rng.normal(size=50_000)
>>> scan = ColumnScan(exact_limit=1000, bins=10, grid_points=500)
>>> for part in np.array_split(data, 7):
...     scan.add(part)
>>> while scan.needs_pass():
...     for part in np.array_split(data, 7):
...         scan.add(part)
...     scan.end_pass()
>>> bool(np.array_equal(scan.edges(), np.unique(np.quantile(data, np.linspace(0, 1, 11)[1:-1]))))
True
"""

from __future__ import annotations

import math

import numpy as np

from driftline.operators.aggregate.sketch import lerp, merge_counts, weighted_quantile

DIGIT = 4
SLOTS = 1 << DIGIT
_SIGN = np.uint64(1 << 63)


def ordered_keys(values: np.ndarray) -> np.ndarray:
    """64-bit unsigned keys that sort like the (finite, non-NaN) float64 ``values``; -0.0 maps like 0.0."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


class ColumnScan:
    """Exact distribution summary of one numeric column, streamed (see the module docstring)."""

    def __init__(self, *, exact_limit: int, bins: int, grid_points: int) -> None:
        self.exact_limit = exact_limit
        self.bins = bins
        self.grid_points = grid_points
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.values: np.ndarray | None = np.empty(0, dtype=np.float64)
        self.counts: np.ndarray | None = np.empty(0, dtype=np.int64)
        self.min = math.inf
        self.max = -math.inf
        self.phase = "first"  # first -> refine -> count -> done
        self.bits = 0
        # cells being refined at depth ``bits``: prefixes (sorted), start ranks, counts
        self.prefixes = np.zeros(1, dtype=np.uint64)
        self.starts = np.zeros(1, dtype=np.int64)
        self._leaf_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (min, max, count, start rank)
        self.leaves: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None  # the same, sorted, once refined
        self._edges: np.ndarray | None = None
        self._hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.bin_counts: np.ndarray | None = None

    # -- passes ---------------------------------------------------------------------
    def add(self, values: np.ndarray) -> None:
        """Feed the next batch of the current pass (NaNs are ignored)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        if self.phase == "first":
            self._first(v)
        elif self.phase == "refine":
            self._refine(v)
        elif self.phase == "count":
            idx = np.searchsorted(self._edges, v, side="right")  # type: ignore[arg-type]
            self.bin_counts += np.bincount(idx, minlength=self._edges.size + 1)  # type: ignore[union-attr,operator]

    def _first(self, v: np.ndarray) -> None:
        self.count += int(v.size)
        self.total += float(v.sum())
        self.total_sq += float(np.dot(v, v))
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        if self.values is not None:
            vals, cnt = np.unique(v + 0.0, return_counts=True)
            self.values, self.counts = merge_counts(self.values, self.counts, vals, cnt.astype(np.int64))  # type: ignore[arg-type]
            if self.values.size > self.exact_limit:
                self.values = self.counts = None

    def _refine(self, v: np.ndarray) -> None:
        keys = ordered_keys(v)
        if self.bits:
            parent = keys >> np.uint64(64 - self.bits)
            idx = np.searchsorted(self.prefixes, parent)
            ok = idx < self.prefixes.size
            ok[ok] = self.prefixes[idx[ok]] == parent[ok]
            keys, v, idx = keys[ok], v[ok], idx[ok]
        else:
            idx = np.zeros(keys.size, dtype=np.int64)
        if not keys.size:
            return
        slot = idx * SLOTS + ((keys >> np.uint64(64 - self.bits - DIGIT)) & np.uint64(SLOTS - 1)).astype(np.int64)
        counts, mins, maxs = self._hist  # type: ignore[misc]
        counts += np.bincount(slot, minlength=counts.size)
        order = np.argsort(slot, kind="stable")
        s, vs = slot[order], v[order]
        heads = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
        np.minimum.at(mins, s[heads], np.minimum.reduceat(vs, heads))
        np.maximum.at(maxs, s[heads], np.maximum.reduceat(vs, heads))

    def needs_pass(self) -> bool:
        """Whether another pass over the data is needed; prepares it."""
        if self.phase == "first":
            if self.values is not None or self.count == 0:
                self.phase = "done"
                return False
            self.phase = "refine"
            self._start_refine()
        return self.phase in ("refine", "count")

    def _targets(self) -> np.ndarray:
        n = self.count
        ranks = []
        for q in np.linspace(0.0, 1.0, self.bins + 1)[1:-1]:
            h = (n - 1) * float(q)
            lo = math.floor(h)
            ranks += [lo, min(lo + 1, n - 1)]
        return np.unique(np.array(ranks, dtype=np.int64))

    def _start_refine(self) -> None:
        size = self.prefixes.size * SLOTS
        self._hist = (np.zeros(size, dtype=np.int64), np.full(size, np.inf), np.full(size, -np.inf))

    def end_pass(self) -> None:
        """Close the current pass (refinement: split cells; counting: done)."""
        if self.phase == "count":
            self.phase = "done"
            return
        counts, mins, maxs = self._hist  # type: ignore[misc]
        n = self.count
        heavy = n / (2 * self.grid_points)
        targets = self._targets()
        c = counts.reshape(-1, SLOTS)
        starts = self.starts[:, None] + np.cumsum(c, axis=1) - c
        child = (self.prefixes[:, None] << np.uint64(DIGIT)) | np.arange(SLOTS, dtype=np.uint64)[None, :]
        c, starts, child = c.ravel(), starts.ravel(), child.ravel()
        live = c > 0
        first = np.searchsorted(targets, starts, side="left")  # the first target rank at or after each child's start
        holds_target = np.zeros(c.size, dtype=bool)
        has = first < targets.size
        holds_target[has] = targets[first[has]] < starts[has] + c[has]
        split = live & (mins < maxs) & ((c > heavy) | holds_target) & (self.bits + DIGIT < 64)
        done = live & ~split
        self._leaf_parts.append((mins[done], maxs[done], c[done], starts[done]))
        self.bits += DIGIT
        self.prefixes, self.starts = child[split], starts[split]
        if self.prefixes.size:
            self._start_refine()
            return
        self._hist = None
        lo, hi, cnt, st = (np.concatenate(parts) for parts in zip(*self._leaf_parts))
        order = np.argsort(st, kind="stable")
        self.leaves = (lo[order], hi[order], cnt[order], st[order])
        self._leaf_parts = []
        self._edges = self.edges()
        self.bin_counts = np.zeros(self._edges.size + 1, dtype=np.int64)
        self.phase = "count"

    # -- results --------------------------------------------------------------------
    def _value_at(self, rank: int) -> float:
        lo, hi, _, starts = self.leaves  # type: ignore[misc]
        i = int(np.searchsorted(starts, rank, side="right")) - 1
        assert lo[i] == hi[i], "a target rank lies in a cell of one value"
        return float(lo[i])

    def edges(self) -> np.ndarray:
        """Distinct interior PSI edges: the exact ``i / bins`` quantiles (numpy ``linear``)."""
        qs = np.linspace(0.0, 1.0, self.bins + 1)[1:-1]
        if self.values is not None:
            return np.unique(np.array([weighted_quantile(self.values, self.counts, float(q)) for q in qs]))  # type: ignore[arg-type]
        n, out = self.count, []
        for q in qs:
            h = (n - 1) * float(q)
            if h >= n - 1:
                out.append(self.max)
                continue
            lo = math.floor(h)
            out.append(lerp(self._value_at(lo), self._value_at(lo + 1), h - lo))
        return np.unique(np.array(out, dtype=np.float64))

    def leaf_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distribution as sorted leaves: top values, counts, and whether each holds one value."""
        if self.values is not None:
            return self.values, self.counts.astype(np.float64), np.ones(self.values.size, dtype=bool)  # type: ignore[union-attr]
        lo, hi, cnt, _ = self.leaves  # type: ignore[misc]
        return hi, cnt.astype(np.float64), lo == hi

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def std(self) -> float | None:
        m = self.mean
        return None if m is None else math.sqrt(max(self.total_sq / self.count - m * m, 0.0))


__all__ = ["ColumnScan", "ordered_keys"]
