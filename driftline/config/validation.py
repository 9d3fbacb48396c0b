"""Configuration section ``validation``: schema limits, per-field quality rules, business rules.

Business rule expressions and quality field names are compiled while the configuration
is validated, so a bad rule fails at start-up with a message naming its key, e.g.
``validation.business_rules[0].expr: unknown field 'rating'``.

>>> cfg = ValidationConfig.model_validate({"business_rules": [
...     {"name": "cheap_but_expensive", "expr": "attributes.price_level == 'cheap' and attributes.price > 20"}]})
>>> cfg.business_rules[0].severity
'error'
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["error", "warn"]

_RULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class FieldQuality(BaseModel):
    """Quality checks on one field (a top-level field such as ``source`` or ``attributes.<key>``).

    A record whose value breaks a check is refused (``severity: error``) or passed with a
    warning (``severity: warn``).  Null or absent values are never judged by the per-record
    checks (required fields are the schema layer's job); ``max_null_share`` judges the batch.
    """

    model_config = ConfigDict(extra="forbid")

    min: float | None = Field(None, description="Smallest allowed numeric value (inclusive); a value that is not a number also fails.")
    max: float | None = Field(None, description="Largest allowed numeric value (inclusive); a value that is not a number also fails.")
    allowed_values: list[str] | None = Field(None, description="The value must be one of these strings (exact match).")
    regex: str | None = Field(None, description="The value must match this regular expression (Rust `regex` syntax, searched, anchor it with ^...$ to match whole values).")
    max_length: int | None = Field(None, ge=1, description="Longest allowed value in characters.")
    max_null_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Batch-level: when more than this share of a batch has the field null or absent, "
        "the warning metric driftline_validation_batch_breaches_total is raised; records are still judged one by one.",
    )
    severity: Severity = Field("error", description="error refuses a record that fails a per-record check; warn passes it with a warning.")

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import polars as pl

        try:
            pl.select(pl.lit("").str.contains(value))
        except Exception as exc:  # polars raises ComputeError on a bad pattern
            raise ValueError(f"invalid regular expression {value!r}: {str(exc).splitlines()[0]}") from None
        return value

    @model_validator(mode="after")
    def _min_le_max(self) -> FieldQuality:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


def _default_quality() -> dict[str, FieldQuality]:
    return {
        "event_id": FieldQuality(max_length=256),
        "source": FieldQuality(max_length=64, max_null_share=0.05),
        "tenant": FieldQuality(max_length=128),
        "user_id": FieldQuality(max_length=256),
    }


class BusinessRule(BaseModel):
    """A business rule: a condition over one record's fields that flags the record when true.

    Expressions use a small, safe subset of Python: field names (``source``, ``tenant``,
    ``user_id``, ``event_id``, ``text``), attributes (``attributes.price`` or
    ``attributes['price-eur']``), constants, ``and``/``or``/``not``, comparisons
    (``== != < <= > >= in not in``), ``is None``/``is not None``, ``+ - * /`` and the
    functions ``len``, ``lower``, ``upper``, ``strip``, ``number``, ``contains``,
    ``startswith``, ``endswith``.  A comparison with a missing attribute or a value that is
    not a number is false.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Rule name, lower_snake_case; reported as business.<name>.")
    expr: str = Field(..., min_length=1, description="Condition that is true for a record breaking the rule.")
    severity: Severity = Field("error", description="error refuses the record; warn passes it with the warning attached.")
    message: str | None = Field(None, description="Human-readable reason; defaults to 'business rule <name> matched: <expr>'.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _RULE_NAME.match(value):
            raise ValueError(f"rule name {value!r} must be lower_snake_case (a-z, 0-9, _; at most 64 characters)")
        return value

    @field_validator("expr")
    @classmethod
    def _expr_compiles(cls, value: str) -> str:
        # Imported here: the operators package imports this module.
        from driftline.operators.validation.rules import compile_rule

        compile_rule(value)  # raises RuleError (a ValueError) naming the problem
        return value


class ValidationConfig(BaseModel):
    """Settings of the validation stage (schema, data quality, business rules)."""

    model_config = ConfigDict(extra="forbid")

    max_future_skew_seconds: float = Field(300.0, ge=0.0, description="An event_time more than this many seconds after the processing time is refused (schema.event_time_future).")
    max_text_bytes: int = Field(32_768, ge=1, description="A text longer than this many UTF-8 bytes is refused (schema.text_too_large).")
    quality: dict[str, FieldQuality] = Field(
        default_factory=_default_quality,
        description="Per-field quality checks keyed by field name (source, tenant, user_id, event_id, text or attributes.<key>). "
        "Setting this replaces the defaults entirely.",
    )
    min_rows_for_null_share: int = Field(20, ge=1, description="Batches with fewer rows are not judged against max_null_share (too small to mean anything).")
    business_rules: list[BusinessRule] = Field(default_factory=list, description="Business rules, evaluated in order after the quality layer.")
    dataset: str = Field("text_event", description="Value of the `dataset` label on validation metrics.")

    @field_validator("quality")
    @classmethod
    def _quality_fields_known(cls, value: dict[str, FieldQuality]) -> dict[str, FieldQuality]:
        from driftline.operators.validation.rules import parse_field_ref

        for key in value:
            parse_field_ref(key)  # raises RuleError naming the field
        return value

    @model_validator(mode="after")
    def _unique_rule_names(self) -> ValidationConfig:
        seen: set[str] = set()
        for rule in self.business_rules:
            if rule.name in seen:
                raise ValueError(f"business rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return self
