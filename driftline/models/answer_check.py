"""The hook that lets a check of the answers reject them inside the chain: after a tier
answered, :func:`check_answers` hands its answers to the :class:`AnswerCheck` (the output
guardrails), and a rejected answer is treated like a failed call: the row moves on to
the next tier, with ``<tier>:rejected:<rule>`` in its fallback reasons and error class
``rejected``.  What the rejected answer cost stays in the row's cost; it remains in the
response cache (an identical input gets the same answer and the same verdict) and its
ledger record is replaced by the row's final result at the end of the batch.

>>> from driftline.config.models import ModelsConfig, LedgerConfig, BackendConfig
>>> from driftline.models.service import ModelService
>>> class NoPositive:
...     def applies(self, tier): return tier.backend.kind != "rules"
...     def __call__(self, answers): return ["rule:no_positive" if lab == "positive" else None for lab in answers["label"]]
>>> svc = ModelService(ModelsConfig(ledger=LedgerConfig(enabled=False)), answer_check=NoPositive())
>>> out = svc.process(pl.DataFrame({"text": ["great service, thanks!", "awful"]})).results
>>> out.select("model_tier", "model_fallback_reasons").rows()
[('rules', ['local:rejected:rule:no_positive']), ('local', [])]
"""

from __future__ import annotations

from typing import Protocol

import polars as pl

from driftline.models.rows import BatchInputs, RowState, Tier

REJECTED = "rejected"


class AnswerCheck(Protocol):
    """Judges the answers one tier gave a batch."""

    def applies(self, tier: Tier) -> bool:
        """Whether the answers of ``tier`` are checked here (a rejected one falls through to
        the next tier); a tier that always closes the chain (rules) should say no."""
        ...

    def __call__(self, answers: pl.DataFrame) -> list[str | None]:
        """Per answer (columns ``label``, ``output``, ``confidence``, ``task``, ``tier``,
        ``model``, ``input``, ``source``, ``tenant``, ``route``), why it is rejected, or None."""
        ...


def check_answers(check: AnswerCheck, tier: Tier, which: list[int], batch: BatchInputs, rows: list[RowState], route: str) -> None:
    """Run ``check`` on the rows of ``which`` that ``tier`` answered; reject those it refuses."""
    answered = [i for i in which if rows[i].tier is tier and rows[i].answer is not None]
    if not answered:
        return
    answers = [rows[i].answer for i in answered]
    frame = pl.DataFrame(
        {
            "label": [a.label for a in answers],  # type: ignore[union-attr]
            "output": [a.output for a in answers],  # type: ignore[union-attr]
            "confidence": [a.confidence for a in answers],  # type: ignore[union-attr]
            "task": [batch.tasks[i] for i in answered],
            "tier": [tier.name] * len(answered),
            "model": [tier.backend.model] * len(answered),
            "input": [batch.texts[i] for i in answered],
            "source": [batch.sources[i] for i in answered],
            "tenant": [batch.tenants[i] for i in answered],
            "route": [route] * len(answered),
        },
        schema_overrides={"confidence": pl.Float64, "label": pl.Utf8, "output": pl.Utf8, "source": pl.Utf8, "tenant": pl.Utf8},
    )
    for i, why in zip(answered, check(frame)):
        if why is not None:
            row = rows[i]
            row.answer = None
            row.tier = None
            row.cached = False
            row.saved = 0.0
            row.error_class = REJECTED
            row.reasons.append(f"{tier.name}:{REJECTED}:{why}")
            row.committed = False  # the final result replaces the ledger record at the end of the batch
