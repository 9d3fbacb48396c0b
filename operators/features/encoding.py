"""Built-in kinds over event columns and attributes: categorical codes and numeric bins.

>>> import polars as pl
>>> from driftline.config.features import FeaturesConfig
>>> cfg = FeaturesConfig(categorical=[{"name": "src", "column": "source", "mapping": {"chat": 2}}], binning=[])
>>> kind = CategoricalCodes.from_config(cfg, {})
>>> df = pl.DataFrame({"source": ["chat", "mail"]})
>>> df.with_columns(kind.compute(df, pl.col("text")))["f_src"].to_list()
[2, -1]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from driftline.config.features import BinningFeature, CategoricalFeature, FeaturesConfig
from driftline.operators.features._exprs import input_expr
from driftline.operators.features.registry import FeatureKind, FeatureSpec, register_feature


def _source(f: CategoricalFeature | BinningFeature) -> str:
    return f"column {f.column!r}" if f.column is not None else f"attribute {f.attribute!r}"


@register_feature("categorical")
class CategoricalCodes(FeatureKind):
    """``f_<name>`` (Int32): the configured code of a column or attribute value, else the default."""

    def __init__(self, features: list[CategoricalFeature]) -> None:
        self.features = features

    @classmethod
    def from_config(cls, cfg: FeaturesConfig, params: Mapping[str, Any]) -> CategoricalCodes | None:
        return cls(list(cfg.categorical)) if cfg.categorical else None

    def specs(self) -> list[FeatureSpec]:
        return [
            FeatureSpec(f"f_{f.name}", pl.Int32, "categorical", f"code of {_source(f)} ({len(f.mapping)} known values, default {f.default})")
            for f in self.features
        ]

    def compute(self, frame: pl.DataFrame, text: pl.Expr) -> list[pl.Expr | pl.Series]:
        return [
            input_expr(frame, f.column, f.attribute)
            .cast(pl.Utf8)
            .replace_strict(f.mapping, default=f.default, return_dtype=pl.Int32)
            .fill_null(f.default)
            .alias(f"f_{f.name}")
            for f in self.features
        ]


@register_feature("binning")
class NumericBins(FeatureKind):
    """``f_<name>`` (Utf8): the label of the left-closed bin holding a numeric column or attribute."""

    def __init__(self, features: list[BinningFeature]) -> None:
        self.features = features

    @classmethod
    def from_config(cls, cfg: FeaturesConfig, params: Mapping[str, Any]) -> NumericBins | None:
        return cls(list(cfg.binning)) if cfg.binning else None

    def specs(self) -> list[FeatureSpec]:
        return [
            FeatureSpec(f"f_{f.name}", pl.Utf8, "categorical", f"bin of {_source(f)}: {', '.join(f.bin_labels())} or {f.missing_label!r}")
            for f in self.features
        ]

    def compute(self, frame: pl.DataFrame, text: pl.Expr) -> list[pl.Expr | pl.Series]:
        out: list[pl.Expr | pl.Series] = []
        for f in self.features:
            value = input_expr(frame, f.column, f.attribute).cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False)
            labels = f.bin_labels()
            expr = pl.when(value.is_null() | value.is_nan()).then(pl.lit(f.missing_label))
            for edge, label in zip(f.edges, labels):
                expr = expr.when(value < edge).then(pl.lit(label))
            out.append(expr.otherwise(pl.lit(labels[-1])).alias(f"f_{f.name}"))
        return out
