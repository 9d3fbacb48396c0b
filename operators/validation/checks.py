"""The registered per-record checks of the schema and quality layers.

Every check is a named, vectorized Polars expression that is true on the rows that
break it (never null).  The schema checks are built from :data:`SCHEMA_CHECK_BUILDERS`
(one small function per check, returning zero or more :class:`RowCheck`), the quality
checks from :data:`QUALITY_CHECKS` (one entry per kind of per-field check).  Adding a
check is registering one function.

Checks that depend on the processing time read it from the column :data:`NOW_COLUMN`,
which the operator adds to each batch, so the expressions are built once at start-up.

>>> from driftline.config.validation import ValidationConfig
>>> [c.code for c in schema_checks(ValidationConfig())][:2]
['schema.missing_field.event_id', 'schema.missing_field.event_time']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
import polars as pl

from driftline.config.validation import FieldQuality, ValidationConfig
from driftline.operators.batch import EVENT_FIELDS_SCHEMA
from driftline.operators.decode import REQUIRED
from driftline.operators.validation.rules import FieldRef

__all__ = [
    "NOW_COLUMN",
    "QUALITY_CHECKS",
    "REQUIRED_FIELDS",
    "SCHEMA_CHECK_BUILDERS",
    "TYPED_FIELDS",
    "QualityCheck",
    "RowCheck",
    "quality_checks",
    "register_quality_check",
    "register_schema_check",
    "schema_checks",
]

#: Column holding the processing time (``TIME_DTYPE``) while a batch is validated.
NOW_COLUMN = "__now__"
#: Fields every text event must carry (``schemas/text_event.avsc``).
REQUIRED_FIELDS: tuple[str, ...] = REQUIRED
#: Fields whose type the decoder checks (codes ``wrong_type:<field>`` in ``field_errors``).
TYPED_FIELDS: tuple[str, ...] = tuple(EVENT_FIELDS_SCHEMA)


@dataclass(frozen=True, slots=True)
class RowCheck:
    """One per-record check: ``violated`` is true (never null) on the rows that break it."""

    code: str
    message: str
    violated: pl.Expr


SchemaCheckBuilder = Callable[[ValidationConfig], Iterable[RowCheck]]
#: Builders of the schema layer's checks, in reporting order.
SCHEMA_CHECK_BUILDERS: list[SchemaCheckBuilder] = []


def register_schema_check(builder: SchemaCheckBuilder) -> SchemaCheckBuilder:
    """Register a builder of schema-layer checks (used as a decorator)."""
    SCHEMA_CHECK_BUILDERS.append(builder)
    return builder


def _field_error(code: str) -> pl.Expr:
    return pl.col("field_errors").list.contains(pl.lit(code, pl.Utf8)).fill_null(False)


@register_schema_check
def _required(cfg: ValidationConfig) -> Iterable[RowCheck]:
    for name in REQUIRED_FIELDS:
        # Null without a decode error (wrong type) means the field was absent.
        missing = pl.col(name).is_null() & ~_field_error(f"wrong_type:{name}")
        yield RowCheck(f"schema.missing_field.{name}", f"required field {name} is missing", missing | _field_error(f"missing_field:{name}"))


@register_schema_check
def _types(cfg: ValidationConfig) -> Iterable[RowCheck]:
    for name in TYPED_FIELDS:
        what = "is not a timestamp (epoch milliseconds or ISO-8601)" if name == "event_time" else "has the wrong type"
        if name == "attributes":
            what = "must be a map of strings, numbers or booleans"
        yield RowCheck(f"schema.wrong_type.{name}", f"field {name} {what}", _field_error(f"wrong_type:{name}"))


@register_schema_check
def _other_field_errors(cfg: ValidationConfig) -> Iterable[RowCheck]:
    known = [f"missing_field:{n}" for n in REQUIRED_FIELDS] + [f"wrong_type:{n}" for n in TYPED_FIELDS]
    other = pl.col("field_errors").list.eval(~pl.element().is_in(pl.lit(pl.Series(known, dtype=pl.Utf8)).implode())).list.any()
    yield RowCheck("schema.field_error", "the decoder reported a field error", other.fill_null(False))


def _blank(col: pl.Expr) -> pl.Expr:
    """True where ``col`` is empty or only whitespace (false on nulls).  The same verdict as
    ``strip_chars()`` leaving nothing (both read Unicode White_Space) without copying
    every string: a search for one non-whitespace character."""
    return col.str.contains(r"\S").not_().fill_null(False)


@register_schema_check
def _event_id_nonempty(cfg: ValidationConfig) -> Iterable[RowCheck]:
    yield RowCheck("schema.event_id_nonempty", "event_id is empty", _blank(pl.col("event_id")))


@register_schema_check
def _event_time_future(cfg: ValidationConfig) -> Iterable[RowCheck]:
    limit = pl.col(NOW_COLUMN) + pl.duration(milliseconds=round(cfg.max_future_skew_seconds * 1000))
    yield RowCheck(
        "schema.event_time_future",
        f"event_time is more than {cfg.max_future_skew_seconds:g} s after the processing time",
        (pl.col("event_time") > limit).fill_null(False),
    )


@register_schema_check
def _text(cfg: ValidationConfig) -> Iterable[RowCheck]:
    text = pl.col("text")
    yield RowCheck("schema.text_nonempty", "text is empty or only whitespace", _blank(text))
    yield RowCheck(
        "schema.text_too_large",
        f"text is larger than {cfg.max_text_bytes} UTF-8 bytes",
        (text.str.len_bytes() > cfg.max_text_bytes).fill_null(False),
    )


def schema_checks(cfg: ValidationConfig) -> list[RowCheck]:
    """All schema-layer row checks (``event_id`` uniqueness is separate: it needs their verdict)."""
    return [check for builder in SCHEMA_CHECK_BUILDERS for check in builder(cfg)]


@dataclass(frozen=True, slots=True)
class QualityCheck:
    """A kind of per-field quality check: applies when its config keys are set."""

    name: str
    applies: Callable[[FieldQuality], bool]
    violated: Callable[[pl.Expr, FieldQuality], pl.Expr]
    message: Callable[[str, FieldQuality], str]


#: Kinds of per-record quality checks, by name (reported as ``quality.<field>.<name>``).
QUALITY_CHECKS: dict[str, QualityCheck] = {}


def register_quality_check(check: QualityCheck) -> QualityCheck:
    """Register a kind of quality check."""
    QUALITY_CHECKS[check.name] = check
    return check


def _range_violated(col: pl.Expr, rule: FieldQuality) -> pl.Expr:
    num = col.cast(pl.Float64, strict=False)
    bad = num.is_null() | num.is_nan()  # present but not a number
    if rule.min is not None:
        bad = bad | (num < rule.min)
    if rule.max is not None:
        bad = bad | (num > rule.max)
    return pl.when(col.is_null()).then(False).otherwise(bad.fill_null(True))


def _range_message(label: str, rule: FieldQuality) -> str:
    lo = "-inf" if rule.min is None else f"{rule.min:g}"
    hi = "inf" if rule.max is None else f"{rule.max:g}"
    return f"{label} is not a number in [{lo}, {hi}]"


register_quality_check(QualityCheck("range", lambda r: r.min is not None or r.max is not None, _range_violated, _range_message))
register_quality_check(
    QualityCheck(
        "allowed_values",
        lambda r: r.allowed_values is not None,
        lambda col, r: col.is_in(pl.lit(pl.Series(r.allowed_values or [], dtype=pl.Utf8)).implode()).not_().fill_null(False),
        lambda label, r: f"{label} is not one of the allowed values ({', '.join(r.allowed_values or [])})",
    )
)
register_quality_check(
    QualityCheck(
        "regex",
        lambda r: r.regex is not None,
        lambda col, r: col.str.contains(r.regex or "").not_().fill_null(False),
        lambda label, r: f"{label} does not match the pattern {r.regex}",
    )
)
register_quality_check(
    QualityCheck(
        "max_length",
        lambda r: r.max_length is not None,
        lambda col, r: (col.str.len_chars() > (r.max_length or 0)).fill_null(False),
        lambda label, r: f"{label} is longer than {r.max_length} characters",
    )
)


def quality_checks(ref: FieldRef, rule: FieldQuality) -> list[RowCheck]:
    """The row checks configured for one field."""
    col = pl.col(ref.column)
    return [
        RowCheck(f"quality.{ref.label}.{kind.name}", kind.message(ref.label, rule), kind.violated(col, rule))
        for kind in QUALITY_CHECKS.values()
        if kind.applies(rule)
    ]
