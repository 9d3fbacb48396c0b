"""The output guardrails' window columns (registered in :mod:`driftline.operators.aggregate.columns`).

Per window and key: ``output_pii_total`` (entities masked in answers) and
``output_pii_events`` (answers holding any), ``guard_reviews`` / ``guard_review_rate`` and
``guard_rejects`` / ``guard_reject_rate`` (shares of the answers that got a decision), and
``guard_confidence_mean``; each evaluator adds ``eval_<name>_mean``
(:func:`~driftline.operators.guardrails.evaluators.register_evaluator`).
"""

from __future__ import annotations

import polars as pl

from driftline.operators.aggregate.columns import register_window_column
from driftline.operators.guardrails import evaluators  # noqa: F401  (the built-in evaluators' columns)

DECISION = "guard_decision"

def _register() -> None:
    decided = {f"{DECISION}_n": (DECISION, lambda: pl.col(DECISION).is_not_null())}
    for decision, plural in (("review", "reviews"), ("reject", "rejects")):
        name = f"guard_{plural}"
        sums = {name: (DECISION, lambda d=decision: pl.col(DECISION) == d), **decided}
        register_window_column(name, pl.Int64, sums, lambda s, _e, name=name: int(s[name]) if f"{DECISION}_n" in s else None)
        register_window_column(f"guard_{decision}_rate", pl.Float64, sums, lambda s, e, name=name: s[name] / s[f"{DECISION}_n"] if s.get(f"{DECISION}_n") else None)
    conf = {"guard_confidence": ("guard_confidence", lambda: pl.col("guard_confidence").fill_null(0.0)), "guard_confidence_n": ("guard_confidence", lambda: pl.col("guard_confidence").is_not_null())}
    register_window_column("guard_confidence_mean", pl.Float64, conf, lambda s, _e: s["guard_confidence"] / s["guard_confidence_n"] if s.get("guard_confidence_n") else None)
    pii = {"output_pii_total": ("output_pii_total", lambda: pl.col("output_pii_total")), "output_pii_events": ("output_pii_total", lambda: pl.col("output_pii_total") > 0)}
    register_window_column("output_pii_total", pl.Int64, pii, lambda s, _e: int(s["output_pii_total"]) if "output_pii_total" in s else None)
    register_window_column("output_pii_events", pl.Int64, pii, lambda s, _e: int(s["output_pii_events"]) if "output_pii_events" in s else None)

_register()
