"""Configuration section ``guardrails``: what is checked on a model's answer before it is
stored or sent, and how the checks turn into a decision.

Every answer gets a confidence (the model's own, or ``missing_confidence`` when it gave
none), lowered by each check that fires, and a decision from ``thresholds``: ``accept``
(at or above ``accept``), ``review`` (at or above ``review``), else ``reject``.  A
rejected answer of a tier that ``fall_through`` allows is retried on the next tier of
the chain, as a failed call is.  Rules, risk patterns and evaluator names are checked
while the configuration is validated, so a bad one fails at start-up naming its key.

>>> cfg = GuardrailsConfig.model_validate({"rules": [{"name": "no_refund_promise", "expr": "contains(lower(text), 'refund guaranteed')"}]})
>>> cfg.rules[0].severity, cfg.risk.levels["critical"], cfg.thresholds.accept
('error', 0.5, 0.8)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from driftline.config.privacy import check_rust_regex
from driftline.config.validation import _RULE_NAME as _NAME

PiiAction = Literal["mask", "next_tier", "refuse"]

#: Fields an output rule may name, with their kinds (``output.<key>`` reads the answer's JSON).
OUTPUT_RULE_FIELDS: dict[str, Literal["str", "num"]] = {
    "label": "str",
    "confidence": "num",
    "text": "str",
    "input": "str",
    "task": "str",
    "tier": "str",
    "model": "str",
    "source": "str",
    "tenant": "str",
}


class Thresholds(BaseModel):
    """Confidence at or above ``accept`` is accepted, at or above ``review`` goes to review, else rejected."""

    model_config = ConfigDict(extra="forbid")

    accept: float = Field(0.8, ge=0.0, le=1.0, description="Lowest confidence accepted as it is.")
    review: float = Field(0.6, ge=0.0, le=1.0, description="Lowest confidence flagged for human review; below it the answer is rejected.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.accept:
            raise ValueError(f"review ({self.review}) is above accept ({self.accept})")
        return self


class OutputPiiConfig(BaseModel):
    """PII and secrets in the answer's text fields: always masked before anything is stored
    or sent; then ``mask`` keeps the masked answer (its confidence times ``factor``),
    ``next_tier`` rejects it so the next tier answers, ``refuse`` rejects it without retry."""

    model_config = ConfigDict(extra="forbid")

    action: PiiAction = Field("mask", description="What happens to an answer holding PII or a secret: mask, next_tier or refuse.")
    actions: dict[str, PiiAction] = Field(default_factory=dict, description="Per entity type (EMAIL, CREDIT_CARD, SECRET, ...): overrides `action`. The strictest action found in an answer wins.")
    factor: float = Field(0.7, ge=0.0, le=1.0, description="Confidence factor of an answer kept masked.")

    @field_validator("actions")
    @classmethod
    def _known_entities(cls, value: dict[str, PiiAction]) -> dict[str, PiiAction]:
        from driftline.config.privacy import entity_names

        unknown = sorted(set(value) - set(entity_names()))
        if unknown:
            raise ValueError(f"unknown entity type(s) {unknown}; known: {list(entity_names())} (custom recognizers' entities are accepted at start-up)")
        return value


class RiskCategory(BaseModel):
    """A risk category: declared patterns (Rust regex, searched case-insensitively) and its level."""

    model_config = ConfigDict(extra="forbid")

    level: str = Field(..., description="A key of risk.levels (critical, high, medium, low or a configured one).")
    patterns: list[str] = Field(..., min_length=1, description="Regular expressions (no look-around, no backreferences); any match puts the answer in the category.")
    scope: Literal["output", "input", "both"] = Field("output", description="Which text is searched: the answer's text, the model input, or both.")

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for p in value:
            check_rust_regex(p)
        return value


def _default_levels() -> dict[str, float]:
    return {"critical": 0.5, "high": 0.7, "medium": 0.85, "low": 0.95}


def _default_categories() -> dict[str, RiskCategory]:
    return {
        "medical": RiskCategory(level="critical", patterns=[r"\bdiagnos", r"\btreatment", r"\bprescri(?:be|ption)", r"\bdosage\b", r"\b\d+\s?mg\b", r"\bsymptom"]),
        "financial": RiskCategory(level="high", patterns=[r"[$€£]\s?\d[\d,]*(?:\.\d+)?\s?(?:[kmb]n?\b|million|billion)?", r"\brevenue", r"\binvest(?:ment|ing)?\b", r"\binterest rate", r"\bstock price"]),
        "legal": RiskCategory(level="medium", patterns=[r"\blawsuit", r"\bliab(?:le|ility)\b", r"\blegal advice", r"\battorney", r"\bsue\b"]),
    }


class RiskConfig(BaseModel):
    """Risk categories: an answer in a category has its confidence multiplied by its level's factor."""

    model_config = ConfigDict(extra="forbid")

    levels: dict[str, float] = Field(default_factory=_default_levels, description="Level name -> confidence factor in [0, 1].")
    categories: dict[str, RiskCategory] = Field(default_factory=_default_categories, description="Category name -> level and patterns. Setting this replaces the defaults (medical, financial, legal).")

    @model_validator(mode="after")
    def _levels_known(self) -> RiskConfig:
        for name, f in self.levels.items():
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"levels.{name}: factor {f} is not in [0, 1]")
        for name, c in self.categories.items():
            if not _NAME.match(name):
                raise ValueError(f"categories.{name}: category names are lower_snake_case")
            if c.level not in self.levels:
                raise ValueError(f"categories.{name}.level: unknown level {c.level!r}; known: {sorted(self.levels)}")
        return self


class OutputRule(BaseModel):
    """A business rule over an answer, written like ``validation.business_rules``.

    Fields: ``label``, ``confidence`` (number), ``text`` (the answer's text), ``input``
    (the masked model input), ``task``, ``tier``, ``model``, ``source``, ``tenant``, and
    ``output.<key>`` (a top-level field of the answer's JSON, a number when compared with
    one).  ``error`` rejects the answer (next tier), ``warn`` multiplies its confidence by
    ``factor``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=_NAME.pattern, description="Rule name, lower_snake_case (at most 64 characters); reported as rule:<name>.")
    expr: str = Field(..., min_length=1, description="Condition that is true for an answer breaking the rule.")
    severity: Literal["error", "warn"] = Field("error", description="error rejects the answer; warn lowers its confidence by factor.")
    factor: float = Field(0.9, ge=0.0, le=1.0, description="Confidence factor of a warn rule.")

    @field_validator("expr")
    @classmethod
    def _expr_compiles(cls, value: str) -> str:
        from driftline.operators.validation.rules import compile_rule

        compile_rule(value, fields=OUTPUT_RULE_FIELDS, namespace="output")
        return value


class StatisticalConfig(BaseModel):
    """Checks of each answer against the drift reference profile (``driftline profile``):
    a label the reference saw in less than ``min_label_share`` of its rows, or a confidence
    below the reference's ``confidence_quantile``, multiplies the confidence by ``factor``.
    Needs a profile file: ``profile_path``, else ``monitoring.drift.profile_path`` when the
    drift reference is a profile; without one these checks are off."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the statistical checks when a reference profile is available.")
    profile_path: str | None = Field(None, description="Reference profile file; default: monitoring.drift.profile_path (reference: profile).")
    min_label_share: float = Field(0.01, ge=0.0, le=1.0, description="A label rarer than this in the reference is unusual.")
    confidence_quantile: float = Field(0.01, ge=0.0, le=1.0, description="A confidence below this quantile of the reference's is unusual.")
    factor: float = Field(0.9, ge=0.0, le=1.0, description="Confidence factor of each unusual finding.")


class GuardrailsConfig(BaseModel):
    """Output guardrails: checks on every answer after the model call (see docs/models.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Check answers before they are stored or sent. Off: no guard columns are filled and nothing is masked.")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    missing_confidence: float = Field(1.0, ge=0.0, le=1.0, description="Confidence of an answer whose model gave none (a summary), before the checks lower it.")
    fall_through: Literal["remote", "all", "none"] = Field(
        "remote",
        description="Which tiers' rejected answers are retried on the next tier: remote (answers of remote tiers), all (local tiers too; the rules tier is always final), none.",
    )
    output_pii: OutputPiiConfig = Field(default_factory=OutputPiiConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    rules: list[OutputRule] = Field(default_factory=list, description="Business rules over answers, evaluated in order.")
    statistical: StatisticalConfig = Field(default_factory=StatisticalConfig)
    evaluators: list[str] = Field(
        default_factory=lambda: ["label_allowed", "output_pii", "risk", "calibration"],
        description="Registered evaluators whose scores become eval_<name> columns (see docs/models.md).",
    )

    @field_validator("evaluators")
    @classmethod
    def _evaluators_known(cls, value: list[str]) -> list[str]:
        from driftline.operators.guardrails.evaluators import EVALUATORS

        unknown = [v for v in value if v not in EVALUATORS]
        if unknown:
            raise ValueError(f"unknown evaluator(s) {unknown}; registered: {sorted(EVALUATORS)}")
        if len(set(value)) != len(value):
            raise ValueError("an evaluator is listed twice")
        return value

    @model_validator(mode="after")
    def _unique_rules(self) -> GuardrailsConfig:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule name(s) {dup} used twice")
        return self
