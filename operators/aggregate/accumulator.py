"""Per-window, per-key accumulators built from micro-batch frames.

A micro-batch is cut, with one Polars ``partition_by``, into *slices*: the rows of one
key (``monitoring.key_dims``) and one *pane* (the slide of a sliding window, or the
whole tumbling window).  Each slice becomes a :class:`WindowAccumulator`: counts and
sums, error classes, tiers and labels as category counts, latency, confidence and
numeric features as :class:`~driftline.operators.aggregate.sketch.QuantileSketch`,
categorical features as :class:`~driftline.operators.aggregate.sketch.CategoryCounts`.
Accumulators merge associatively and commutatively, so a window's result is the same
whatever the arrival order or the micro-batch boundaries.

>>> import polars as pl
>>> from datetime import datetime, timezone
>>> from driftline.config.monitoring import MonitoringConfig
>>> cfg = MonitoringConfig()
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> frame = pl.DataFrame({"event_time": [t, t], "source": ["a", "a"], "model_name": ["m", "m"],
...                       "model_latency_ms": [100.0, 300.0]})
>>> [(p.key, p.acc.events, p.acc.latency.quantile(0.5)) for p in slice_frame(frame, cfg)]
[(('a', 'm'), 2, 200.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import polars as pl

from driftline.config.monitoring import DriftFeature, MonitoringConfig
from driftline.operators.aggregate.columns import window_columns, window_sums
from driftline.operators.aggregate.sketch import CategoryCounts, QuantileSketch, deepcopy_slots
from driftline.operators.batch import ENGINE

UNKNOWN = "unknown"


def align_origin(cfg: MonitoringConfig) -> datetime:
    """The UTC instant window boundaries are aligned to."""
    return datetime.fromisoformat(cfg.align_to).astimezone(timezone.utc)


def key_column(cfg: MonitoringConfig, dim: str) -> str:
    """Input column holding key dimension ``dim`` (``model`` maps to ``columns.model``)."""
    return cfg.columns.model if dim == "model" else dim


def window_input_columns(cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None) -> frozenset[str]:
    """Every input column the window aggregation reads: the ones ``monitoring.columns``
    names, the key dimensions', the drift features' (``features``, default
    ``cfg.drift.features``) and every column a registered window sum's expression reads
    (:mod:`~driftline.operators.aggregate.columns`).

    A frame cut down to these columns gives the same slices as the whole frame (the flows
    cut the scored rows to them before the keyed window steps: a frame that crosses to
    another worker is pickled, and the scored rows are about a hundred columns wide).

    >>> cols = window_input_columns(MonitoringConfig())
    >>> {"event_time", "source", "model_cost_usd", "guard_decision"} <= cols, "text" in cols
    (True, False)
    """
    feats = cfg.drift.features if features is None else features
    cols = set(cfg.columns.names())
    cols.update(key_column(cfg, dim) for dim in cfg.key_dims)
    cols.update(f.name for f in feats)
    for column in window_columns().values():
        for needs, expr in column.sums.values():
            cols.add(needs)
            cols.update(expr().meta.root_names())
    return frozenset(cols)


@dataclass(slots=True)
class WindowAccumulator:
    """Mergeable statistics of one key over one pane or window.

    Latency uses a sketch exact up to ``exact_limit`` distinct values; model confidence
    and the numeric drift features one exact up to ``drift_limit`` distinct values
    (``monitoring.drift.window_exact_values``), so drift statistics are exact.
    """

    exact_limit: int = 1024
    relative_accuracy: float = 0.01
    category_cap: int = 50
    drift_limit: int = 100_000
    events: int = 0
    model_calls: int = 0
    errors: CategoryCounts = field(default_factory=lambda: CategoryCounts(cap=64))
    latency: QuantileSketch = field(default_factory=QuantileSketch)
    confidence: QuantileSketch = field(default_factory=QuantileSketch)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    cache_saved_usd: float = 0.0
    tiers: CategoryCounts = field(default_factory=lambda: CategoryCounts(cap=64))
    labels: CategoryCounts = field(default_factory=lambda: CategoryCounts(cap=50))
    pii_total: int = 0
    pii_events: int = 0
    injection_events: int = 0
    budget_exhausted_calls: int = 0
    numeric: dict[str, QuantileSketch] = field(default_factory=dict)
    categorical: dict[str, CategoryCounts] = field(default_factory=dict)
    first_event_time: datetime | None = None
    last_event_time: datetime | None = None
    #: sums of the registered window columns (:mod:`.columns`), by sum name
    sums: dict[str, float] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, Any]) -> WindowAccumulator:
        return deepcopy_slots(self, memo)  # type: ignore[no-any-return]

    @classmethod
    def empty(cls, cfg: MonitoringConfig, *, drift_limit: int | None = None) -> WindowAccumulator:
        """A fresh accumulator with the configured limits (``drift_limit`` overrides ``drift.window_exact_values``)."""
        limit = cfg.drift.window_exact_values if drift_limit is None else drift_limit
        return cls._fresh(cfg.exact_quantile_limit, cfg.sketch_relative_accuracy, cfg.drift.categorical_top_k, limit)

    @classmethod
    def _fresh(cls, exact_limit: int, relative_accuracy: float, category_cap: int, drift_limit: int) -> WindowAccumulator:
        # the sketches and labels are given, not built by the defaults and replaced (fewer objects per slice)
        return cls(
            exact_limit=exact_limit,
            relative_accuracy=relative_accuracy,
            category_cap=category_cap,
            drift_limit=drift_limit,
            latency=QuantileSketch(exact_limit=exact_limit, relative_accuracy=relative_accuracy),
            confidence=QuantileSketch(exact_limit=max(exact_limit, drift_limit), relative_accuracy=relative_accuracy),
            labels=CategoryCounts(cap=category_cap),
        )

    def copy(self) -> WindowAccumulator:
        """An independent copy (merging into it never changes ``self``)."""
        return WindowAccumulator._fresh(self.exact_limit, self.relative_accuracy, self.category_cap, self.drift_limit).merge(self)

    def _sketch(self) -> QuantileSketch:
        return QuantileSketch(exact_limit=self.exact_limit, relative_accuracy=self.relative_accuracy)

    def _drift_sketch(self) -> QuantileSketch:
        return QuantileSketch(exact_limit=max(self.exact_limit, self.drift_limit), relative_accuracy=self.relative_accuracy)

    def merge(self, other: WindowAccumulator) -> WindowAccumulator:
        """Fold ``other`` into this accumulator and return ``self``."""
        self.events += other.events
        self.model_calls += other.model_calls
        self.errors.merge(other.errors)
        self.latency.merge(other.latency)
        self.confidence.merge(other.confidence)
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.cache_hits += other.cache_hits
        self.cache_saved_usd += other.cache_saved_usd
        self.tiers.merge(other.tiers)
        self.labels.merge(other.labels)
        self.pii_total += other.pii_total
        self.pii_events += other.pii_events
        self.injection_events += other.injection_events
        self.budget_exhausted_calls += other.budget_exhausted_calls
        for name, sk in other.numeric.items():
            have = self.numeric.get(name)
            if have is None:
                have = self.numeric[name] = self._drift_sketch()
            have.merge(sk)
        for name, cc in other.categorical.items():
            have_cc = self.categorical.get(name)
            if have_cc is None:
                have_cc = self.categorical[name] = CategoryCounts(cap=self.category_cap)
            have_cc.merge(cc)
        for name, v in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + v
        t = other.first_event_time
        if t is not None and (self.first_event_time is None or t < self.first_event_time):
            self.first_event_time = t
        t = other.last_event_time
        if t is not None and (self.last_event_time is None or t > self.last_event_time):
            self.last_event_time = t
        return self

    @property
    def errors_total(self) -> int:
        return self.errors.total


@dataclass(slots=True)
class Slice:
    """The rows of one key and one pane of a micro-batch, summarized.

    They belong to the windows ``first_window .. pane`` (a sliding window's pane lies in
    several windows; rows already late for the earlier ones start later).
    """

    key: tuple[str, ...]
    pane: int
    max_time: datetime
    first_id: str | None
    acc: WindowAccumulator
    first_window: int = 0


@dataclass(frozen=True, slots=True)
class WindowGeometry:
    """Window arithmetic in epoch milliseconds: window ``w`` starts ``w`` panes after ``align_to``.

    >>> g = WindowGeometry.of(MonitoringConfig(window_seconds=60, slide_seconds=20))
    >>> g.panes_per_window, g.end_ms(0) - g.origin_ms
    (3, 60000)
    """

    origin_ms: int
    pane_ms: int
    length_ms: int
    lateness_ms: int

    @classmethod
    def of(cls, cfg: MonitoringConfig) -> WindowGeometry:
        return cls(
            origin_ms=int(align_origin(cfg).timestamp() * 1000),
            pane_ms=cfg.pane_seconds * 1000,
            length_ms=cfg.window_seconds * 1000,
            lateness_ms=round(cfg.allowed_lateness_seconds * 1000),
        )

    @property
    def panes_per_window(self) -> int:
        return self.length_ms // self.pane_ms

    def end_ms(self, window_id: int) -> int:
        return self.origin_ms + window_id * self.pane_ms + self.length_ms

    def pane_of(self, t_ms: int) -> int:
        return (t_ms - self.origin_ms) // self.pane_ms


def _scalar_exprs(cfg: MonitoringConfig, has: set[str]) -> list[pl.Expr]:
    """Per-group counts and sums of one accumulator (columns the frame lacks count as absent)."""
    c = cfg.columns
    exprs: list[pl.Expr] = [pl.len().alias("events")]
    called = None
    if c.model in has:
        called = pl.col(c.model).is_not_null()
    budget = None
    if c.error_class in has:
        err = pl.col(c.error_class).is_not_null()
        called = err if called is None else (called | err)
        budget = (pl.col(c.error_class) == c.budget_error_class).fill_null(False)
    if c.fallback_reasons in has:
        # the model stage writes reasons as "<tier>:<reason>" (e.g. "primary:budget"); a bare reason counts too
        r = c.budget_fallback_reason
        skipped = pl.col(c.fallback_reasons).list.eval((pl.element() == r) | pl.element().str.ends_with(":" + r)).list.any().fill_null(False)
        budget = skipped if budget is None else (budget | skipped)
    if budget is not None:
        exprs.append(budget.sum().alias("budget"))
    if called is not None:
        exprs.append(called.sum().alias("calls"))
    for name, col in (("in_tok", c.input_tokens), ("out_tok", c.output_tokens), ("pii", c.pii_total)):
        if col in has:
            exprs.append(pl.col(col).cast(pl.Int64).sum().alias(name))
    if c.pii_total in has:
        exprs.append((pl.col(c.pii_total) > 0).sum().alias("pii_events"))
    for name, col in (("cost", c.cost_usd), ("saved", c.cost_saved_usd)):
        if col in has:
            exprs.append(pl.col(col).cast(pl.Float64).sum().alias(name))
    if c.cached in has:
        exprs.append(pl.col(c.cached).cast(pl.Boolean).sum().alias("hits"))
    if c.injection_score in has:
        exprs.append((pl.col(c.injection_score) >= c.injection_threshold).sum().alias("inj"))
    if c.event_time in has:
        exprs.append(pl.col(c.event_time).min().alias("t0"))
        exprs.append(pl.col(c.event_time).max().alias("t1"))
    if c.event_id in has:
        exprs.append(pl.col(c.event_id).cast(pl.Utf8).min().alias("first_id"))
    exprs.extend(window_sums(has))
    return exprs


def _grouped_counts(df: pl.DataFrame, columns: list[tuple[str, str, bool]]) -> dict[str, dict[int, dict[str, int]]]:
    """Non-null values of each ``(name, column, explode)`` counted per ``__gid`` group (list
    elements with ``explode``), by name: every column in one grouped count."""
    if not columns:
        return {}
    parts = []
    for i, (_name, col, explode) in enumerate(columns):
        lf = df.lazy().select("__gid", col)
        if explode:
            lf = lf.explode(col)
        parts.append(lf.drop_nulls(col).select("__gid", pl.lit(i, pl.Int32).alias("__c"), pl.col(col).cast(pl.Utf8).alias("__v")))
    counts = pl.concat(parts).group_by("__gid", "__c", "__v").len().collect(engine=ENGINE)
    out: dict[str, dict[int, dict[str, int]]] = {name: {} for name, _col, _explode in columns}
    names = [name for name, _col, _explode in columns]
    for g, i, v, n in zip(*(counts.to_series(k).to_list() for k in range(4))):
        out[names[i]].setdefault(g, {})[v] = n
    return out


FloatSummary = tuple[int, float, float, float, float, np.ndarray, np.ndarray]


def _float_summaries(values: np.ndarray, gid: np.ndarray, rows: list[np.ndarray], order: np.ndarray | None = None) -> list[FloatSummary | None]:
    """Per group (``rows[g]``: its row indices, in order), what :meth:`QuantileSketch.add` computes
    of the group's non-NaN values: count, sum, sum of squares, min, max, distinct values
    (``-0.0`` as ``0.0``) and their counts; ``None`` for a group without values.
    ``order`` is ``np.concatenate(rows)`` when the caller has it.

    The column is taken group after group (rows in order), so each group's values are one
    contiguous run: its sum and sum of squares are taken over that run, in row order, as
    ``add`` does, so the floats are the same.  Distinct values come from one ``np.unique``
    of the column and one count per (group, value) cell.
    """
    n_groups = len(rows)
    if order is None:
        order = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    v = values[order]
    g = gid[order]
    if np.isnan(v).any():
        ok = ~np.isnan(v)
        v, g = v[ok], g[ok]
    if v.size == 0:
        return [None] * n_groups
    sizes = np.bincount(g, minlength=n_groups)
    ends = np.cumsum(sizes).tolist()
    uy, inv = np.unique(v + 0.0, return_inverse=True)  # + 0.0: -0.0 and 0.0 are one value
    n_values = uy.size
    key = g * n_values + inv.reshape(-1)
    if n_groups * n_values <= 4 * key.size + 4096:  # a dense count is cheaper than a sort
        per_cell = np.bincount(key, minlength=n_groups * n_values)
        cells = np.flatnonzero(per_cell)
        cell_counts = per_cell[cells]
    else:
        cells, cell_counts = np.unique(key, return_counts=True)
    uvals = uy[cells % n_values]
    ucnt = cell_counts.astype(np.int64, copy=False)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cells // n_values, minlength=n_groups))]).tolist()
    zeros = bool((uy == 0).any())  # min and max of the raw values, where a zero's sign could differ
    firsts = uvals.tolist()
    out: list[FloatSummary | None] = []
    for gi, size in enumerate(sizes.tolist()):
        if size == 0:
            out.append(None)
            continue
        part = v[ends[gi] - size : ends[gi]]
        lo, hi = bounds[gi], bounds[gi + 1]
        if zeros:
            vmin, vmax = float(part.min()), float(part.max())
        else:
            vmin, vmax = firsts[lo], firsts[hi - 1]
        out.append((size, float(part.sum()), float(np.dot(part, part)), vmin, vmax, uvals[lo:hi].copy(), ucnt[lo:hi].copy()))
    return out


def summaries(df: pl.DataFrame, by: list[str], cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None) -> list[tuple[tuple, str | None, WindowAccumulator]]:
    """One ``(group values, smallest event id, accumulator)`` per group of ``by`` (first-seen order).

    One grouped aggregation for the counts and sums, one per categorical column, and numpy
    slices for the sketches: the cost grows with the columns, not with the groups.
    """
    if df.height == 0:
        return []
    c = cfg.columns
    feats = cfg.drift.features if features is None else features
    has = set(df.columns)
    groups = df.with_row_index("__row").group_by(by, maintain_order=True).agg(pl.col("__row"), *_scalar_exprs(cfg, has))
    members = groups.get_column("__row")
    flat = members.explode().to_numpy().astype(np.int64, copy=False)
    sizes = members.list.len().to_numpy().astype(np.int64)
    ends = np.cumsum(sizes).tolist()
    rows = [flat[e - k : e] for e, k in zip(ends, sizes.tolist())]
    gid = np.empty(df.height, dtype=np.int64)
    gid[flat] = np.repeat(np.arange(groups.height, dtype=np.int64), sizes)
    counted = df.with_columns(pl.Series("__gid", gid))
    categories = _grouped_counts(
        counted,
        [
            (name, col, explode)
            for name, col, explode in (
                [("errors", c.error_class, False), ("tiers", c.tier, False), ("labels", c.label, False)]
                + [(f"f:{f.name}", f.name, f.kind == "list") for f in feats if f.kind != "numeric"]
            )
            if col in has
        ],
    )
    floats = {
        name: _float_summaries(np.ascontiguousarray(df.get_column(col).cast(pl.Float64).to_numpy(), dtype=np.float64), gid, rows, flat)
        for name, col in [("latency", c.latency_ms), ("confidence", c.confidence)] + [(f"f:{f.name}", f.name) for f in feats if f.kind == "numeric"]
        if col in has
    }
    # the groups' values column by column (no per-row dicts): what ``iter_rows`` would give
    col = {name: groups.get_column(name).to_list() for name in groups.columns if name != "__row"}
    zeros = [0] * groups.height
    nones = [None] * groups.height
    events, calls, budget = col["events"], col.get("calls", zeros), col.get("budget", zeros)
    in_tok, out_tok, pii, pii_events = col.get("in_tok", zeros), col.get("out_tok", zeros), col.get("pii", zeros), col.get("pii_events", zeros)
    cost, saved, hits, inj = col.get("cost", zeros), col.get("saved", zeros), col.get("hits", zeros), col.get("inj", zeros)
    t0, t1, first_ids = col.get("t0", nones), col.get("t1", nones), col.get("first_id", nones)
    sum_cols = [(name[2:], values) for name, values in col.items() if name.startswith("s:")]
    keys = list(zip(*(col[k] for k in by)))
    # (feature name or accumulator attribute, whether a drift feature, values per group)
    cat_items = [(name[2:], True, counts) if name.startswith("f:") else (name, False, counts) for name, counts in categories.items()]
    float_items = [(name[2:], True, per_group) if name.startswith("f:") else (name, False, per_group) for name, per_group in floats.items()]
    limits = (cfg.exact_quantile_limit, cfg.sketch_relative_accuracy, cfg.drift.categorical_top_k, cfg.drift.window_exact_values)
    out = []
    for g in range(groups.height):
        acc = WindowAccumulator._fresh(*limits)
        acc.events = int(events[g])
        acc.model_calls = int(calls[g] or 0)
        acc.budget_exhausted_calls = int(budget[g] or 0)
        acc.input_tokens = int(in_tok[g] or 0)
        acc.output_tokens = int(out_tok[g] or 0)
        acc.pii_total = int(pii[g] or 0)
        acc.pii_events = int(pii_events[g] or 0)
        acc.cost_usd = float(cost[g] or 0.0)
        acc.cache_saved_usd = float(saved[g] or 0.0)
        acc.cache_hits = int(hits[g] or 0)
        acc.injection_events = int(inj[g] or 0)
        acc.first_event_time = t0[g]
        acc.last_event_time = t1[g]
        acc.sums = {name: float(values[g]) for name, values in sum_cols if values[g] is not None}
        for name, feature, counts in cat_items:
            got = counts.get(g, {})
            if feature:
                cc = CategoryCounts(cap=acc.category_cap)
                cc.add_counts(got)
                acc.categorical[name] = cc
            elif got:
                getattr(acc, name).add_counts(got)
        for name, feature, per_group in float_items:
            summary = per_group[g]
            if feature:
                sk = acc._drift_sketch()
                if summary is not None:
                    sk.add_summary(*summary)
                acc.numeric[name] = sk
            elif summary is not None:
                getattr(acc, name).add_summary(*summary)
        out.append((keys[g], first_ids[g], acc))
    return out


def accumulate(frame: pl.DataFrame, cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None) -> WindowAccumulator:
    """Summarize ``frame`` (rows of one key and pane) into a fresh accumulator.

    Columns named in ``cfg.columns`` that the frame lacks are treated as absent
    (zero counts, empty sketches), so telemetry with fewer columns works too.
    """
    if frame.height == 0:
        return WindowAccumulator.empty(cfg)
    return summaries(frame.with_columns(pl.lit(0).alias("__all")), ["__all"], cfg, features)[0][2]


TIME_MS, PANE, FIRST = "__t", "__pane", "__first"


def prepare(frame: pl.DataFrame, cfg: MonitoringConfig) -> tuple[pl.DataFrame, list[str]]:
    """Rows with an event time plus internal columns: event time in epoch ms, pane, and
    one key column per key dimension (nulls and missing columns become ``unknown``).
    Returns the frame and the key column names."""
    tcol = cfg.columns.event_time
    g = WindowGeometry.of(cfg)
    t = pl.col(tcol).dt.epoch("ms")
    prep: list[pl.Expr] = [t.alias(TIME_MS), ((t - g.origin_ms) // g.pane_ms).alias(PANE)]
    key_cols = []
    for i, dim in enumerate(cfg.key_dims):
        col = key_column(cfg, dim)
        if dim == "model" and cfg.columns.route in frame.columns:
            col = cfg.columns.route
        name = f"__k{i}"
        key_cols.append(name)
        if col in frame.columns:
            prep.append(pl.col(col).cast(pl.Utf8).fill_null(UNKNOWN).alias(name))
        else:
            prep.append(pl.lit(UNKNOWN, pl.Utf8).alias(name))
    timed = frame if frame.get_column(tcol).null_count() == 0 else frame.filter(pl.col(tcol).is_not_null())  # a filter copies every column
    return timed.with_columns(prep), key_cols


def slices_of(df: pl.DataFrame, key_cols: list[str], cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None) -> list[Slice]:
    """Slices of a :func:`prepare`-d frame, oldest first; grouped by ``__first`` too when present."""
    k = WindowGeometry.of(cfg).panes_per_window
    by_first = FIRST in df.columns
    out: list[Slice] = []
    for keys, first_id, acc in summaries(df, [*key_cols, PANE, *([FIRST] if by_first else [])], cfg, features):
        kvals = keys[: len(key_cols)]
        pane = int(keys[len(key_cols)])
        first = int(keys[-1]) if by_first else pane - k + 1
        out.append(Slice(key=tuple(str(v) for v in kvals), pane=pane, max_time=acc.last_event_time, first_id=first_id, acc=acc, first_window=first))  # type: ignore[arg-type]
    out.sort(key=lambda s: s.max_time)
    return out


def slice_frame(frame: pl.DataFrame, cfg: MonitoringConfig, features: Sequence[DriftFeature] | None = None) -> list[Slice]:
    """Cut a micro-batch into per-key, per-pane :class:`Slice` summaries.

    Rows without an event time are skipped (the validation stage refuses them before).
    Slices are returned oldest first (by their newest event time).
    """
    if frame.height == 0 or cfg.columns.event_time not in frame.columns:
        return []
    df, key_cols = prepare(frame, cfg)
    return slices_of(df, key_cols, cfg, features)


def window_bounds(cfg: MonitoringConfig, window_id: int) -> tuple[datetime, datetime]:
    """Start and end of Bytewax window ``window_id`` (ids count slides from ``align_to``)."""
    start = align_origin(cfg) + timedelta(seconds=cfg.pane_seconds) * window_id
    return start, start + timedelta(seconds=cfg.window_seconds)

