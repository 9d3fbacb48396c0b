"""Small shared Polars helpers for feature kinds."""

from __future__ import annotations

import polars as pl

from driftline.operators.batch import attribute_value


def input_expr(frame: pl.DataFrame, column: str | None, attribute: str | None) -> pl.Expr:
    """The configured input of a categorical or binning feature: a column or an attribute.

    A missing column or attributes map gives nulls, which map to the feature's default.
    """
    if column is not None:
        return pl.col(column) if column in frame.columns else pl.lit(None, pl.Utf8)
    assert attribute is not None
    return attribute_value(attribute) if "attributes" in frame.columns else pl.lit(None, pl.Utf8)


def safe_ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``num / den`` as Float64, 0.0 where ``den`` is 0 (null stays null)."""
    return pl.when(den > 0).then(num.cast(pl.Float64) / den.cast(pl.Float64)).otherwise(pl.when(den.is_not_null()).then(0.0))
