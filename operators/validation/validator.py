"""The validation operator: schema, data-quality and business-rule layers over a micro-batch.

Build a :class:`Validator` once at start-up (it compiles every rule, so a bad rule fails
there), then call :func:`validate_batch` on every decoded micro-batch.  Layers run in
order; a record failing a layer is refused at that layer and not judged further:

1. ``schema``: required fields present, types right, ``event_id`` non-empty and unique
   within the batch, ``event_time`` parsed and not too far in the future, ``text``
   non-empty and within the byte limit (invalid UTF-8 is refused earlier, at decode);
2. ``quality``: the per-field checks of ``validation.quality``;
3. ``business``: the rules of ``validation.business_rules``.

Warn-severity rules append their name to the ``warnings`` column.  Batch-level breaches
(``max_null_share``) raise a warning metric and a JSON log line; records are still judged
one by one.

>>> from datetime import datetime, timezone
>>> from driftline.config.validation import ValidationConfig
>>> from driftline.operators.decode import RawRecord, decode_batch
>>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> batch = decode_batch([RawRecord(b'{"event_id":"e1","event_time":0,"source":"s","text":" "}', "t", 0, 7, 0)], now=now)
>>> out = validate_batch(batch, Validator.from_config(ValidationConfig()), now)
>>> out.rejected.select("stage", "reason_codes").row(0)
('schema', ['schema.text_nonempty'])
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from driftline.config.validation import ValidationConfig
from driftline.operators.batch import EVENT_SCHEMA, TIME_DTYPE, MicroBatch
from driftline.operators.validation import metrics
from driftline.operators.validation.checks import NOW_COLUMN, RowCheck, quality_checks, schema_checks
from driftline.operators.validation.rules import RuleError, attribute_column, attribute_value, compile_rule, parse_field_ref

__all__ = ["VALIDATOR_VERSION", "Validator", "ValidationSetupError", "validate_batch", "validate_records_one_by_one"]

#: Version of the validation logic; the dead-letter sink puts it in a header.
VALIDATOR_VERSION = "1.0.0"

Engine = Literal["polars", "pandera"]
log = logging.getLogger("driftline.validation")


class ValidationSetupError(ValueError):
    """The validation configuration cannot be compiled; the message names the rule and problem."""


@dataclass(frozen=True, slots=True)
class _BusinessRule:
    code: str
    message: str
    severity: str
    expr: pl.Expr


@dataclass(frozen=True, slots=True)
class _QualityField:
    label: str
    column: str
    severity: str
    checks: tuple[RowCheck, ...]
    max_null_share: float | None


def _structure_schema() -> pa.DataFrameSchema:
    """The declared column/dtype contract of a decoded batch (``EVENT_SCHEMA``), as pandera sees it."""
    non_null = {"src_topic", "src_partition", "src_offset", "src_timestamp", "payload_format", "field_errors", "warnings"}
    return pa.DataFrameSchema(
        {name: pa.Column(dtype, nullable=name not in non_null) for name, dtype in EVENT_SCHEMA.items()},
        strict=False,
        name="text_event_batch",
    )


@dataclass(frozen=True, slots=True)
class _Check:
    """A compiled check of one layer; its verdict lands in column ``column``."""

    layer: str
    severity: str
    code: str
    message: str
    column: str


class Validator:
    """Compiled validation rules; build once with :meth:`from_config`, share across batches.

    ``engine`` selects how the schema layer's row checks run: ``polars`` (default) evaluates
    them, with the quality and business checks, as one vectorized Polars selection;
    ``pandera`` runs the same schema expressions as pandera.polars dataframe checks
    (``lazy=True``) and reads the per-row ``failure_cases``.  Both give identical results;
    pandera is slower (see docs/validation.md).  The column and dtype contract is always
    checked with pandera.
    """

    def __init__(self, config: ValidationConfig, *, engine: Engine = "polars") -> None:
        if engine not in ("polars", "pandera"):
            raise ValidationSetupError(f"unknown validation engine {engine!r}; use 'polars' or 'pandera'")
        self.config = config
        self.engine: Engine = engine
        self.dataset = config.dataset
        attributes: set[str] = set()
        self.quality: list[_QualityField] = []
        for key, rule in config.quality.items():
            try:
                ref = parse_field_ref(key)
            except RuleError as exc:
                raise ValidationSetupError(f"validation.quality.{key}: {exc}") from None
            if ref.attribute:
                attributes.add(ref.name)
            self.quality.append(_QualityField(ref.label, ref.column, rule.severity, tuple(quality_checks(ref, rule)), rule.max_null_share))
        self.business: list[_BusinessRule] = []
        for i, rule in enumerate(config.business_rules):
            try:
                compiled = compile_rule(rule.expr)
            except RuleError as exc:
                raise ValidationSetupError(f"validation.business_rules[{i}] ({rule.name}).expr: {exc}") from None
            attributes |= compiled.attributes
            message = rule.message or f"business rule {rule.name} matched: {rule.expr}"
            self.business.append(_BusinessRule(f"business.{rule.name}", message, rule.severity, compiled.expr))
        self.attributes: tuple[str, ...] = tuple(sorted(attributes))
        self.schema_checks: list[RowCheck] = schema_checks(config)

        rows: list[tuple[str, str, RowCheck]] = [("schema", "error", c) for c in self.schema_checks]
        rows += [("quality", q.severity, c) for q in self.quality for c in q.checks]
        rows += [("business", r.severity, RowCheck(r.code, r.message, r.expr)) for r in self.business]
        self._checks = [_Check(layer, sev, c.code, c.message, f"__c{i}") for i, (layer, sev, c) in enumerate(rows)]
        exprs = [c.violated.alias(k.column) for (_, _, c), k in zip(rows, self._checks)]
        self._schema_exprs = [e for e, k in zip(exprs, self._checks) if k.layer == "schema"]
        self._rule_exprs = [e for e, k in zip(exprs, self._checks) if k.layer != "schema"]
        self._prepare = [attribute_value(key) for key in self.attributes]
        self._group: dict[tuple[str, str], list[_Check]] = {}
        for k in self._checks:
            self._group.setdefault((k.layer, k.severity), []).append(k)
        # Expressions reused on every batch, built once.
        self._any_error = {layer: _any(self.checks(layer, "error")) for layer in ("schema", "quality", "business")}
        self._reason_lists = {
            layer: (_lists(self.checks(layer, "error"), "code").alias("c"), _lists(self.checks(layer, "error"), "message").alias("m"))
            for layer in ("schema", "quality", "business")
        }
        warn = self.checks("quality", "warn") + self.checks("business", "warn")
        self._warn_any = _any(warn)
        self._warn_codes = _lists(warn, "code") if warn else None
        self._structure = _structure_schema()
        self._structure_ok: set[tuple[tuple[str, str], ...]] = set()

    @classmethod
    def from_config(cls, config: ValidationConfig, *, engine: Engine = "polars") -> Validator:
        """Compile every quality check and business rule of ``config`` (raises :class:`ValidationSetupError`)."""
        return cls(config, engine=engine)

    def checks(self, layer: str, severity: str) -> list[_Check]:
        """The compiled checks of one layer and severity, in reporting order."""
        return self._group.get((layer, severity), [])

    def check_structure(self, frame: pl.DataFrame, step_id: str = "validate") -> None:
        """Check the frame's columns and dtypes against ``EVENT_SCHEMA`` with pandera.

        The verdict depends only on the frame's schema, so it is cached per schema; a
        mismatch is a wiring bug upstream and raises ``TypeError`` naming the step.
        """
        key = tuple((name, str(dtype)) for name, dtype in frame.schema.items())
        if key in self._structure_ok:
            return
        try:
            self._structure.validate(frame.head(0), lazy=True)
        except SchemaErrors as exc:
            fc = exc.failure_cases.select(pl.col("column").cast(pl.Utf8), pl.col("check").cast(pl.Utf8), pl.col("failure_case").cast(pl.Utf8))
            problems = "; ".join(sorted({f"{col or '<frame>'}: expected {check}, got {got}" for col, check, got in fc.iter_rows()}))
            raise TypeError(f"step {step_id!r}: the micro-batch does not match EVENT_SCHEMA: {problems}") from None
        self._structure_ok.add(key)


def _lists(checks: list[_Check], attr: Literal["code", "message"]) -> pl.Expr:
    """Per row, the codes (or messages) of the checks whose verdict column is true."""
    if not checks:
        return pl.lit([], pl.List(pl.Utf8))
    return pl.concat_list([pl.when(pl.col(k.column)).then(pl.lit(getattr(k, attr), pl.Utf8)) for k in checks]).list.drop_nulls()


def _any(checks: list[_Check]) -> pl.Expr:
    return pl.any_horizontal([pl.col(k.column) for k in checks]) if checks else pl.lit(False)


def _schema_verdicts_pandera(frame: pl.DataFrame, validator: Validator) -> pl.DataFrame:
    """Run the schema checks as pandera.polars dataframe checks; return one boolean column per check."""
    checks = validator.schema_checks
    columns = [k.column for k in validator.checks("schema", "error")]
    needed = sorted({name for c in checks for name in c.violated.meta.root_names()})
    schema = pa.DataFrameSchema(
        checks=[pa.Check(lambda data, v=c.violated: data.lazyframe.select(~v), name=col) for c, col in zip(checks, columns)],
        name="text_event_schema_layer",
    )
    try:
        schema.validate(frame.select(needed), lazy=True)
        failed = pl.DataFrame(schema={"index": pl.Int64, "check": pl.Utf8})
    except SchemaErrors as exc:
        failed = exc.failure_cases.select(pl.col("index").cast(pl.Int64), pl.col("check").cast(pl.Utf8))
    index = pl.int_range(0, frame.height, eager=True, dtype=pl.Int64)
    return pl.DataFrame([index.is_in(failed.filter(pl.col("check") == col)["index"].implode()).alias(col) for col in columns])


def _null_share_breaches(frame: pl.DataFrame, validator: Validator) -> list[tuple[str, float, float]]:
    fields = [q for q in validator.quality if q.max_null_share is not None]
    if not fields or frame.height < validator.config.min_rows_for_null_share:
        return []
    shares = frame.select([pl.col(q.column).is_null().mean().alias(q.label) for q in fields]).row(0)
    return [(f"quality.{q.label}.max_null_share", share, q.max_null_share) for q, share in zip(fields, shares) if share > q.max_null_share]  # type: ignore[operator]


_DUP_CODE = pl.lit(["schema.event_id_unique"], pl.List(pl.Utf8))
_DUP_MESSAGE = pl.lit(["event_id repeats an earlier record of the same batch"], pl.List(pl.Utf8))


def validate_batch(batch: MicroBatch, validator: Validator, now: datetime | None = None, *, step_id: str = "validate") -> MicroBatch:
    """Validate the ``valid`` rows of a decoded micro-batch; refused rows move to ``rejected``.

    ``now`` (default ``batch.now``) is the processing time the future-skew check uses.
    Rows refused earlier (at decode) are kept as they are.  The returned batch's
    ``valid`` rows passed every layer and carry the names of warn rules they tripped in
    ``warnings``; refused rows carry ``stage`` (the first layer they failed),
    ``reason_codes`` and ``reasons``.  Raises ``TypeError`` naming ``step_id`` if the frame
    does not match ``EVENT_SCHEMA`` (a wiring bug, not bad data).

    Every check of every layer is evaluated in one vectorized pass; a record's stage is
    the first layer with a failed error check, so later layers never judge it.
    """
    if not isinstance(batch, MicroBatch):
        raise TypeError(f"step {step_id!r}: expected a MicroBatch, received {type(batch).__name__}")
    if batch.valid.height == 0:
        return batch
    now = now or batch.now
    started = time.perf_counter()
    dataset = validator.dataset
    n_in = batch.valid.height
    n_rejected_before = batch.rejected.height
    validator.check_structure(batch.valid, step_id)

    work = batch.valid.with_columns(*validator._prepare, pl.lit(now).cast(TIME_DTYPE).alias(NOW_COLUMN))
    for rule, share, limit in _null_share_breaches(work, validator):
        metrics.BATCH_BREACHES.labels(dataset, rule).inc()
        fields = {"step": step_id, "dataset": dataset, "rule": rule, "share": round(share, 4), "limit": limit, "rows": n_in}
        log.warning("validation batch breach", extra={"fields": fields})

    # One pass: a boolean verdict column per check of every layer.
    if validator.engine == "pandera":
        verdicts = pl.concat([_schema_verdicts_pandera(work, validator), work.select(validator._rule_exprs)], how="horizontal")
    else:
        verdicts = work.select(*validator._schema_exprs, *validator._rule_exprs)
    verdicts = verdicts.with_columns(work["event_id"], validator._any_error["schema"].alias("_s")).with_columns(
        # event_id unique within the batch: the first otherwise-valid occurrence wins.
        (~pl.col("_s") & ~pl.when(~pl.col("_s")).then(pl.col("event_id")).is_first_distinct()).alias("_dup"),
    ).with_columns(
        pl.when(pl.col("_s") | pl.col("_dup")).then(pl.lit("schema"))
        .when(validator._any_error["quality"]).then(pl.lit("quality"))
        .when(validator._any_error["business"]).then(pl.lit("business"))
        .alias("_stage")
    )

    for stage in ("schema", "quality", "business"):
        mask = (verdicts["_stage"] == stage).fill_null(False)
        if not mask.any():
            continue
        reasons = verdicts.filter(mask).select(*validator._reason_lists[stage], "_dup")
        if stage == "schema":
            reasons = reasons.select(
                pl.when("_dup").then(_DUP_CODE).otherwise("c").alias("c"),
                pl.when("_dup").then(_DUP_MESSAGE).otherwise("m").alias("m"),
            )
        for rule, count in reasons["c"].explode().value_counts().iter_rows():
            metrics.REFUSALS.labels(dataset, stage, rule).inc(count)
        batch = MicroBatch(valid=work, rejected=batch.rejected, now=batch.now).refuse(mask, stage, reasons["c"], reasons["m"])
        verdicts = verdicts.filter(~mask)
        work = batch.valid

    warned = 0
    if validator._warn_codes is not None and work.height:
        warned = int(verdicts.select(validator._warn_any).to_series().sum())
        if warned:
            new = verdicts.select(validator._warn_codes).to_series()
            for rule, count in new.explode().drop_nulls().value_counts().iter_rows():
                metrics.WARNINGS.labels(dataset, rule).inc(count)
            work = work.with_columns(pl.col("warnings").list.concat(new))
    valid = work.drop([attribute_column(k) for k in validator.attributes] + [NOW_COLUMN])
    batch = MicroBatch(valid=valid, rejected=batch.rejected, now=batch.now)

    metrics.RECORDS.labels(dataset, "refused").inc(batch.rejected.height - n_rejected_before)
    metrics.RECORDS.labels(dataset, "warned").inc(warned)
    metrics.RECORDS.labels(dataset, "valid").inc(valid.height)
    metrics.BATCH_SECONDS.labels(dataset).observe(time.perf_counter() - started)
    return batch


def validate_records_one_by_one(batch: MicroBatch, validator: Validator, now: datetime | None = None) -> MicroBatch:
    """Reference path for benchmarks: validate each row as its own 1-row batch and concatenate.

    Gives the same rows as :func:`validate_batch` except for ``event_id`` uniqueness, which
    only exists within a batch.
    """
    now = now or batch.now
    valid_parts: list[pl.DataFrame] = []
    rejected_parts: list[pl.DataFrame] = [batch.rejected]
    for i in range(batch.valid.height):
        one = validate_batch(MicroBatch(valid=batch.valid.slice(i, 1), now=batch.now), validator, now)
        valid_parts.append(one.valid)
        rejected_parts.append(one.rejected)
    valid = pl.concat(valid_parts, how="vertical") if valid_parts else batch.valid
    return MicroBatch(valid=valid, rejected=pl.concat(rejected_parts, how="vertical"), now=batch.now)
