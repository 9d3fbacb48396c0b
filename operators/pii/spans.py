"""Regex match offsets with Polars' Rust engine (linear time, no backtracking)."""

from __future__ import annotations

import numpy as np
import polars as pl

_MARK = "\x00"  # never in a detection view: the view has no control characters


def regex_spans(texts: pl.Series, rows: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every non-overlapping match of ``pattern`` (Rust regex, leftmost-first) in ``texts``:
    ``(row, start, end)`` arrays with code-point offsets; ``rows[i]`` labels ``texts[i]``.

    Polars has no "find all with offsets", so each match is wrapped in a marker character
    (absent from views) and the strings are split on it: odd pieces are the matches, and
    the pieces' lengths give the offsets.  Linear time; the pattern must not match "".

    >>> regex_spans(pl.Series(["a1b22", "x"]), np.array([7, 8]), r"\\d+")
    (array([7, 7]), array([1, 3]), array([2, 5]))
    """
    if texts.len() == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    parts = pl.DataFrame({"r": rows, "t": texts}).select(
        "r", pl.col("t").str.replace_all(pattern, _MARK + "${0}" + _MARK).str.split(_MARK).alias("p")
    ).explode("p")
    lens = parts["p"].str.len_chars().fill_null(0).to_numpy().astype(np.int64)
    r = parts["r"].to_numpy()
    m = len(r)
    first = np.ones(m, dtype=bool)
    first[1:] = r[1:] != r[:-1]
    group = np.maximum.accumulate(np.where(first, np.arange(m), 0))
    cum = np.cumsum(lens)
    start = cum - lens - (cum[group] - lens[group])
    odd = ((np.arange(m) - group) % 2) == 1
    return r[odd].astype(np.int64), start[odd], (start + lens)[odd]


__all__ = ["regex_spans"]
