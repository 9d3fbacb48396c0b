"""Built-in kind ``pii``: the privacy stage's per-type counts and classification as features.

The privacy stage (``operators/pii``) adds ``pii_<type>`` counts, ``pii_total`` and
``classification``; this kind republishes them under stable feature names and fills
what is missing (count 0, ``default_classification``), so the feature schema does not
depend on which recognizers ran.  Only counts and a class label: never a PII value.

>>> import polars as pl
>>> from driftline.config.features import FeaturesConfig
>>> kind = PiiFeatures.from_config(FeaturesConfig(), {})
>>> df = pl.DataFrame({"pii_email": [2, 0], "classification": ["confidential", None]})
>>> df.with_columns(kind.compute(df, pl.col("text"))).select("f_pii_email", "f_pii_total", "f_classification").rows()
[(2, 2, 'confidential'), (0, 0, 'unknown')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from driftline.config.features import FeaturesConfig
from driftline.operators.features.registry import FeatureKind, FeatureSpec, register_feature


@register_feature("pii")
class PiiFeatures(FeatureKind):
    """``f_pii_<type>`` counts, ``f_pii_total`` and ``f_classification``."""

    def __init__(self, types: list[str], default_classification: str) -> None:
        self.types = [t.lower() for t in types]
        self.default_classification = default_classification

    @classmethod
    def from_config(cls, cfg: FeaturesConfig, params: Mapping[str, Any]) -> PiiFeatures | None:
        p = cfg.pii
        return cls(p.types, p.default_classification) if p.enabled else None

    def specs(self) -> list[FeatureSpec]:
        return [
            *(FeatureSpec(f"f_pii_{t}", pl.UInt32, "numeric", f"{t} entities masked by the privacy stage") for t in self.types),
            FeatureSpec("f_pii_total", pl.UInt32, "numeric", "all PII entities masked (pii_total, else the sum of pii_<type> columns present)"),
            FeatureSpec("f_classification", pl.Utf8, "categorical", "data classification assigned by the privacy stage"),
        ]

    def compute(self, frame: pl.DataFrame, text: pl.Expr) -> list[pl.Expr | pl.Series]:
        cols = set(frame.columns)
        out: list[pl.Expr | pl.Series] = []
        for t in self.types:
            src = f"pii_{t}"
            expr = pl.col(src).cast(pl.UInt32).fill_null(0) if src in cols else pl.lit(0, pl.UInt32)
            out.append(expr.alias(f"f_pii_{t}"))
        if "pii_total" in cols:
            total = pl.col("pii_total").cast(pl.UInt32).fill_null(0)
        else:
            counts = [c for c in frame.columns if c.startswith("pii_") and frame.schema[c].is_integer()]
            total = pl.sum_horizontal([pl.col(c).fill_null(0) for c in counts]).cast(pl.UInt32) if counts else pl.lit(0, pl.UInt32)
        out.append(total.alias("f_pii_total"))
        cls_expr = pl.col("classification").cast(pl.Utf8) if "classification" in cols else pl.lit(None, pl.Utf8)
        out.append(cls_expr.fill_null(self.default_classification).alias("f_classification"))
        return out
