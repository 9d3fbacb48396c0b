"""Compare the datasets two runs wrote (tests and bench/bench_e2e.py): rows by natural
key, every column equal, floats up to summation order; columns that measure processing
time (when a row was processed, how long a model call took) are left out.

>>> import tempfile
>>> dataset_differences(tempfile.mkdtemp(), tempfile.mkdtemp())
{}
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from driftline.sinks.parquet import load_entries, open_store

#: Natural keys of the flows' datasets (flows/datasets.py).
NATURAL_KEYS: dict[str, list[str]] = {
    "enriched": ["src_topic", "src_partition", "src_offset"],
    "rejected": ["src_topic", "src_partition", "src_offset"],
    "audit": ["src_topic", "src_partition", "src_offset"],
    "telemetry": ["src_topic", "src_partition", "src_offset"],
    "metrics": ["window_start", "key"],
    "metrics_late": ["window_start", "key", "first_id"],
    "alerts": ["rule", "key", "window_start", "state"],
}

#: Columns whose values are measured while running, not derived from the input.
PROCESSING_TIME: frozenset[str] = frozenset(
    {"processed_at", "model_latency_ms", "fired_at", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms", "latency_max_ms"}
)


def dataset_frame(root: str | Path, name: str) -> pl.DataFrame | None:
    """Every live row of dataset ``name`` under ``root`` (``None``: no such dataset)."""
    store = open_store(str(root))
    if not store.exists(f"{name}/_manifest"):
        return None
    files = [store.uri(f"{name}/{f.path}") for e in load_entries(store, name) for f in e.files]
    return pl.read_parquet(files, hive_partitioning=False) if files else pl.DataFrame()


def dataset_differences(a: str | Path, b: str | Path, *, ignore: frozenset[str] = PROCESSING_TIME, measured: bool = False) -> dict[str, str]:
    """``{dataset: what differs}`` between the datasets under roots ``a`` and ``b`` (empty: equal).

    Rows are matched by natural key (a key held twice is a difference); float columns
    may differ by 1e-9 relative (summation order).  ``ignore`` columns are not compared
    unless ``measured`` is set.
    """
    out: dict[str, str] = {}
    for name, keys in NATURAL_KEYS.items():
        x, y = dataset_frame(a, name), dataset_frame(b, name)
        if x is None and y is None:
            continue
        if x is None or y is None:
            out[name] = f"only under {'b' if x is None else 'a'}"
            continue
        if x.height != y.height:
            out[name] = f"{x.height} rows vs {y.height}"
            continue
        if x.height == 0:
            continue
        if x.select(keys).is_duplicated().any() or y.select(keys).is_duplicated().any():
            out[name] = "a natural key is held twice"
            continue
        x, y = x.sort(keys), y.sort(keys)
        if set(x.columns) != set(y.columns):
            out[name] = f"columns differ: {sorted(set(x.columns) ^ set(y.columns))}"
            continue
        bad = [c for c in x.columns if (measured or c not in ignore) and not _same(x[c], y[c])]
        if bad:
            out[name] = f"columns differ: {bad}"
    return out


def _same(p: pl.Series, q: pl.Series) -> bool:
    if p.dtype.is_float():
        close = ((p - q).abs() <= 1e-9 * (p.abs() + q.abs()).clip(lower_bound=1.0)).fill_null(False) | (p.is_null() & q.is_null())
        return bool(close.all())
    return p.equals(q) or (p.dtype.is_nested() and close_values(p.to_list(), q.to_list()))


def close_values(a: object, b: object, *, floor: float = 1.0, nan_equal: bool = False, strict_types: bool = False) -> bool:
    """Equal JSON-like values (dicts, lists, tuples, scalars), floats up to summation order:
    within 1e-9 of the larger of the two magnitudes and ``floor``.  ``nan_equal``: NaN
    equals NaN; ``strict_types``: values of different types never match (1 and 1.0, a
    tuple and a list).

    >>> close_values({"n": 2, "sum": [0.1 + 0.2]}, {"n": 2, "sum": [0.3]}), close_values([1e-6], [2e-6], floor=1e-3)
    (True, False)
    >>> close_values(float("nan"), float("nan"), nan_equal=True), close_values([1, (2,)], [1.0, [2]]), close_values([1, (2,)], [1.0, [2]], strict_types=True)
    (True, True, False)
    """
    if strict_types and type(a) is not type(b):
        return False
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return False
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b), floor) or (nan_equal and a != a and b != b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_values(a[k], b[k], floor=floor, nan_equal=nan_equal, strict_types=strict_types) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close_values(x, y, floor=floor, nan_equal=nan_equal, strict_types=strict_types) for x, y in zip(a, b))
    return a == b


__all__ = ["NATURAL_KEYS", "PROCESSING_TIME", "close_values", "dataset_differences", "dataset_frame"]
