"""Window columns added by registration: a sum (or several) per window and key, and the
value published in the ``metrics`` row from them.

A stage that adds columns to the scored rows (the output guardrails, the evaluators)
registers what its windows should show: the sums to accumulate (each an expression over
the rows of a slice, summed, and the input column it needs: a frame without that column
adds nothing) and a function turning the window's sums into the published value.  Sums
merge by addition, so they stay exact whatever the micro-batch boundaries.  Registered
columns are part of :func:`~driftline.operators.aggregate.rows.metrics_schema` and can be
named by ``threshold`` alert rules.

>>> import polars as pl
>>> register_window_column("doc_flags", pl.Int64, {"doc_flags": ("flag", lambda: pl.col("flag").cast(pl.Int64))}, lambda s, events: int(s.get("doc_flags", 0)))
>>> "doc_flags" in window_columns()
True
>>> del WINDOW_COLUMNS["doc_flags"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

#: A sum: (input column it needs, builder of the per-row expression summed per slice).
SumSpec = tuple[str, Callable[[], pl.Expr]]
#: The published value from the window's sums and its event count.
ValueFn = Callable[[Mapping[str, float], int], Any]


@dataclass(frozen=True, slots=True)
class WindowColumn:
    name: str
    dtype: pl.DataType
    sums: Mapping[str, SumSpec]
    value: ValueFn


WINDOW_COLUMNS: dict[str, WindowColumn] = {}


def register_window_column(name: str, dtype: pl.DataType, sums: Mapping[str, SumSpec], value: ValueFn) -> None:
    """Register a metrics column (see the module docstring); a sum name may be shared by
    several columns (it is accumulated once)."""
    existing = WINDOW_COLUMNS.get(name)
    if existing is not None and (existing.dtype != dtype or dict(existing.sums).keys() != dict(sums).keys()):
        raise ValueError(f"window column {name!r} is already registered differently")
    WINDOW_COLUMNS[name] = WindowColumn(name, dtype, dict(sums), value)


def window_columns() -> dict[str, WindowColumn]:
    """Every registered column, the built-in registrants (output guardrails, evaluators) loaded first."""
    import driftline.operators.guardrails.window  # noqa: F401  (registers the built-in columns)

    return WINDOW_COLUMNS


def window_sums(has: set[str]) -> list[pl.Expr]:
    """The per-slice sum expressions of every registered sum whose input column is in ``has``."""
    out: dict[str, pl.Expr] = {}
    for col in window_columns().values():
        for name, (needs, expr) in col.sums.items():
            if needs in has and name not in out:
                out[name] = expr().cast(pl.Float64).sum().alias(f"s:{name}")
    return list(out.values())
