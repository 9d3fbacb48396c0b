"""Evaluators: scores of a batch of (input, output) pairs, one small registered class each.

An evaluator sees the answers of a micro-batch as an :class:`EvalBatch` (the masked model
input, the answer's text, label, confidence, task and tier, and what the guardrails found)
and returns one score per row (``Float64``, null where it does not apply).  Scores become
``eval_<name>`` columns of the enriched rows; their window mean is the metrics column
``eval_<name>_mean``, usable in alert rules.  The built-ins need no network:

- ``label_allowed``: 1 when the label is one the task allows (sentiment labels, the
  classification's categories), else 0; null for tasks without labels;
- ``output_pii``: 1 when the answer held PII or a secret (masked before storage), else 0;
- ``risk``: hallucination risk from the risk categories, ``1 - product of their factors``
  (0: no category; 0.5: a critical one);
- ``calibration``: squared gap between the confidence and whether the rules tier gives
  the same label on the same input (a Brier score against a weak reference: 0 is a
  confident answer the rules agree with; high values mean confident disagreement);
  null for the rules tier itself and tasks without labels.

Adding one::

    @register_evaluator("short_summary")
    class ShortSummary(Evaluator):
        def score(self, batch):
            return (batch.frame["text"].str.len_chars() < 400).cast(pl.Float64)

then list it in ``guardrails.evaluators``.

>>> b = EvalBatch(pl.DataFrame({"input": ["x"], "text": [""], "label": ["positive"], "confidence": [0.9], "task": ["sentiment"], "tier": ["local"]}), np.zeros(1, np.int32), np.ones(1))
>>> LabelAllowed(EvalContext({})).score(b).to_list(), OutputPii(EvalContext({})).score(b).to_list()
([None], [0.0])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import polars as pl

from driftline.models.prompts import SENTIMENT_LABELS, TaskSpec
from driftline.operators.aggregate.columns import register_window_column


@dataclass(frozen=True, slots=True)
class EvalContext:
    """What evaluators may use, built once at start-up: the model tasks by name."""

    tasks: Mapping[str, TaskSpec]


@dataclass(frozen=True, slots=True)
class EvalBatch:
    """The answers of one micro-batch.

    ``frame`` columns: ``input`` (masked model input), ``text`` (the answer's text fields,
    masked), ``label``, ``confidence`` (the model's), ``task``, ``tier``; ``output_pii``:
    entities found in each answer; ``risk_factor``: product of the risk categories' factors.
    """

    frame: pl.DataFrame
    output_pii: np.ndarray
    risk_factor: np.ndarray


class Evaluator(ABC):
    """Scores answers; built once at start-up with the :class:`EvalContext`, then called per batch."""

    name: ClassVar[str] = ""

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def score(self, batch: EvalBatch) -> pl.Series:
        """One Float64 score per row of ``batch.frame``, in order (null: not applicable)."""


E = TypeVar("E", bound=type[Evaluator])
EVALUATORS: dict[str, type[Evaluator]] = {}


def eval_column(name: str) -> str:
    return f"eval_{name}"


def register_evaluator(name: str) -> Callable[[E], E]:
    """Class decorator: register an evaluator under ``name`` and its window column ``eval_<name>_mean``."""

    def deco(cls: E) -> E:
        if name in EVALUATORS and EVALUATORS[name] is not cls:
            raise ValueError(f"evaluator {name!r} is already registered by {EVALUATORS[name].__name__}")
        cls.name = name
        EVALUATORS[name] = cls
        col = eval_column(name)
        register_window_column(
            f"{col}_mean",
            pl.Float64,
            {col: (col, lambda: pl.col(col).fill_null(0.0)), f"{col}_n": (col, lambda: pl.col(col).is_not_null())},
            lambda sums, _events, col=col: sums[col] / sums[f"{col}_n"] if sums.get(f"{col}_n") else None,
        )
        return cls

    return deco


def labels_of(spec: TaskSpec) -> tuple[str, ...] | None:
    """The labels a task allows (None for tasks without labels)."""
    if spec.kind == "sentiment":
        return SENTIMENT_LABELS
    if spec.kind == "classification":
        return tuple(spec.config.categories)
    return None


@register_evaluator("label_allowed")
class LabelAllowed(Evaluator):
    """1 when the label is one its task allows, 0 otherwise; null for tasks without labels."""

    def __init__(self, ctx: EvalContext) -> None:
        super().__init__(ctx)
        allowed = {name: labels_of(spec) for name, spec in ctx.tasks.items()}
        self._pairs = pl.Series([f"{t}\x00{lab}" for t, labels in allowed.items() for lab in labels or ()], dtype=pl.Utf8).implode()
        self._labelled = pl.Series([t for t, labels in allowed.items() if labels], dtype=pl.Utf8).implode()

    def score(self, batch: EvalBatch) -> pl.Series:
        key = pl.concat_str([pl.col("task"), pl.lit("\x00"), pl.col("label")])
        hit = key.is_in(self._pairs).fill_null(False).cast(pl.Float64)
        return batch.frame.select(pl.when(pl.col("task").is_in(self._labelled)).then(hit).alias(self.name)).to_series()


@register_evaluator("output_pii")
class OutputPii(Evaluator):
    """1 when the answer held PII or a secret, else 0."""

    def score(self, batch: EvalBatch) -> pl.Series:
        return pl.Series(self.name, (batch.output_pii > 0).astype(np.float64))


@register_evaluator("risk")
class RiskScore(Evaluator):
    """Hallucination risk of the answer from its risk categories: 1 - product of their factors."""

    def score(self, batch: EvalBatch) -> pl.Series:
        return pl.Series(self.name, 1.0 - batch.risk_factor)


@register_evaluator("calibration")
class Calibration(Evaluator):
    """(confidence - agreement with the rules tier)^2, for labelled tasks answered by another tier.

    The rules tier's label is computed here for the whole batch with Polars (the same
    keyword counts as :class:`~driftline.models.rules.RulesBackend`, which a test checks).
    """

    def __init__(self, ctx: EvalContext) -> None:
        super().__init__(ctx)
        from driftline.config.models import BackendConfig
        from driftline.models.rules import RulesBackend

        rules = RulesBackend("rules", BackendConfig(kind="rules"), ctx.tasks)
        self._labelled = {name: spec for name, spec in ctx.tasks.items() if labels_of(spec)}
        self._keywords = {name: rules.keywords(spec) for name, spec in self._labelled.items()}
        self._any_keyword = sorted({w for kw in self._keywords.values() for words in kw.values() for w in words if w})

    def rules_labels(self, frame: pl.DataFrame) -> pl.Series:
        """The label the rules tier gives each row's ``input`` for its ``task`` (null for other tasks)."""
        n = frame.height
        low = frame.select(pl.int_range(n, dtype=pl.UInt32).alias("row"), pl.col("input").fill_null("").str.to_lowercase().alias("w"))
        # only a text holding some keyword can count one: the others are not split into words
        low = low.filter(pl.col("w").str.contains_any(self._any_keyword)) if self._any_keyword else low.clear()
        tokens = low.select("row", pl.col("w").str.extract_all(r"[a-z']+")).explode("w")
        rows, words = tokens["row"].to_numpy(), tokens["w"]
        tasks = frame["task"]
        out = pl.Series("rules_label", [None] * n, dtype=pl.Utf8)
        for name, spec in self._labelled.items():
            mine = (tasks == name).fill_null(False)
            if not mine.any():
                continue
            kw = self._keywords[name]
            labels = list(kw)
            mat = np.stack([np.bincount(rows[words.is_in(pl.Series(sorted(kw[lab]), dtype=pl.Utf8).implode()).fill_null(False).to_numpy()], minlength=n) for lab in labels], axis=1)
            if spec.kind == "sentiment":
                zero = np.zeros(n, dtype=np.int64)
                pos = mat[:, labels.index("positive")] if "positive" in labels else zero
                neg = mat[:, labels.index("negative")] if "negative" in labels else zero
                names = np.where(pos > neg, "positive", np.where(neg > pos, "negative", "neutral")).astype(object)
            else:
                names = np.asarray(labels, dtype=object)[mat.argmax(axis=1)]  # the first of equal counts: configuration order, as the rules tier
                names[mat.max(axis=1) == 0] = spec.config.default_category
            out = out.zip_with(~mine, pl.Series(names.tolist(), dtype=pl.Utf8))
        return out

    def score(self, batch: EvalBatch) -> pl.Series:
        f = batch.frame
        todo = (pl.col("task").is_in(list(self._labelled)) & pl.col("label").is_not_null() & pl.col("confidence").is_not_null() & (pl.col("tier") != "rules")).fill_null(False)
        sub = f.filter(todo)
        if sub.height == 0:
            return pl.Series(self.name, [None] * f.height, dtype=pl.Float64)
        agree = (sub["label"] == self.rules_labels(sub)).fill_null(False).cast(pl.Float64)
        gap = ((sub["confidence"] - agree) ** 2).alias(self.name)
        mask = f.select(todo).to_series()
        return f.select(pl.when(mask).then(pl.lit(0.0)).alias(self.name)).to_series().scatter(mask.arg_true(), gap)


def build_evaluators(names: list[str], ctx: EvalContext) -> list[Evaluator]:
    """The configured evaluators, in order (names are checked by the configuration)."""
    return [EVALUATORS[n](ctx) for n in names]
