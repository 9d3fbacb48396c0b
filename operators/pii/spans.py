"""Regex match offsets with Polars' Rust engine (linear time, no backtracking)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from driftline.operators.batch import ENGINE

_MARK = "\x00"  # never in a detection view: the view has no control characters


def _row_cumsum(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Exclusive running sum of ``values`` within each run of equal ``rows``."""
    m = len(rows)
    if m == 0:
        return values
    first = np.ones(m, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    group = np.maximum.accumulate(np.where(first, np.arange(m), 0))
    cum = np.cumsum(values)
    return cum - values - (cum[group] - values[group])


def regex_spans(texts: pl.Series, rows: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every non-overlapping match of ``pattern`` (Rust regex, leftmost-first) in ``texts``:
    ``(row, start, end)`` arrays with code-point offsets; ``rows[i]`` labels ``texts[i]``.
    The pattern must not match "".

    >>> regex_spans(pl.Series(["a1b22", "x"]), np.array([7, 8]), r"\\d+")
    (array([7, 7]), array([1, 3]), array([2, 5]))
    """
    empty = np.zeros(0, dtype=np.int64)
    if texts.len() == 0:
        return empty, empty, empty
    frame = pl.DataFrame({"t": texts}).select(_marked(pl.col("t"), pattern).alias("g"))
    return _spans_of(frame["g"], np.asarray(rows, dtype=np.int64))


def regex_spans_many(texts: pl.Series, jobs: list[tuple[np.ndarray, str]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`regex_spans` of several patterns, each over its own rows of ``texts`` (``jobs``:
    ``(rows, pattern)``), with one Polars call (``collect_all``): the patterns run in parallel
    on Polars' thread pool, without the GIL, and the per-call cost is paid once.  Spans are
    labelled by position in ``texts``.

    >>> regex_spans_many(pl.Series(["a1b22", "x9"]), [(np.array([0, 1]), r"\\d+"), (np.array([1]), r"[a-z]")])
    [(array([0, 0, 1]), array([1, 3, 1]), array([2, 5, 2])), (array([1]), array([0]), array([1]))]
    """
    empty = np.zeros(0, dtype=np.int64)
    out = [(empty, empty, empty)] * len(jobs)
    live = [j for j, (rows, _) in enumerate(jobs) if len(rows)]
    if not live:
        return out
    queries = [pl.LazyFrame({"t": texts.gather(jobs[j][0])}).select(_marked(pl.col("t"), jobs[j][1]).alias("g")) for j in live]
    for j, frame in zip(live, pl.collect_all(queries, engine=ENGINE)):
        out[j] = _spans_of(frame["g"], np.asarray(jobs[j][0], dtype=np.int64))
    return out


def _marked(col: pl.Expr, pattern: str) -> pl.Expr:
    """Per string, the list of pieces ``gap, match, gap, ..., match, gap`` (2k+1 for k
    matches): every match wrapped in a marker character (absent from views), then split on
    it.  One find-all pass of the regex, without capture groups (Rust's fast matcher)."""
    return col.str.replace_all(pattern, _MARK + "${0}" + _MARK, literal=False).str.split(_MARK)


def _spans_of(pieces: pl.Series, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, start, end)`` of the matches in a column of :func:`_marked` piece lists; the
    odd pieces of a row are its matches, each starting after the pieces before it."""
    empty = np.zeros(0, dtype=np.int64)
    g = _list_array(pieces)
    counts = np.asarray(pc.fill_null(pc.list_value_length(g), 0), dtype=np.int64)
    matches = (counts - 1) // 2
    matches[counts == 0] = 0
    if not matches.any():
        return empty, empty, empty
    lengths = np.asarray(pc.utf8_length(g.flatten()), dtype=np.int64)
    piece_row = np.repeat(np.arange(len(counts)), counts)
    before = _row_cumsum(piece_row, lengths)  # characters before each piece, in its row
    first = np.cumsum(counts) - counts
    j = np.arange(len(lengths)) - first[piece_row]
    odd = (j & 1) == 1
    start = before[odd]
    return np.repeat(rows, matches), start, start + lengths[odd]


def _list_array(s: pl.Series) -> pa.ListArray | pa.LargeListArray:
    arr = s.to_arrow()
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


__all__ = ["regex_spans", "regex_spans_many"]
