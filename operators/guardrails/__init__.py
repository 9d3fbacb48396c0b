"""Output guardrails: PII and secrets masked in answers, business rules, risk categories,
statistical checks against the drift reference, a decision per answer, and evaluators.

Build one :class:`OutputGuard` at start-up and run :meth:`OutputGuard.apply` on each batch
of scored rows; give :meth:`OutputGuard.tier_check` to the model service so rejected
answers fall through to the next tier::

    guard = OutputGuard.from_config(cfg, masker)
    service = ModelService(cfg.models, answer_check=guard.tier_check())
    rows = guard.apply(scored, guard_output_schema(cfg))
"""

from driftline.operators.guardrails.engine import ANSWER_COLUMNS, DECISIONS, Checked, OutputGuard, guard_output_schema, output_pii_column
from driftline.operators.guardrails.evaluators import EVALUATORS, EvalBatch, EvalContext, Evaluator, eval_column, register_evaluator

__all__ = [
    "ANSWER_COLUMNS",
    "DECISIONS",
    "EVALUATORS",
    "Checked",
    "EvalBatch",
    "EvalContext",
    "Evaluator",
    "OutputGuard",
    "eval_column",
    "guard_output_schema",
    "output_pii_column",
    "register_evaluator",
]
