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

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from driftline.config.validation import ValidationConfig
from driftline.operators.batch import EVENT_SCHEMA, MicroBatch
from driftline.operators.validation import metrics
from driftline.operators.validation.checks import RowCheck, quality_checks, schema_checks
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


class Validator:
    """Compiled validation rules; build once with :meth:`from_config`, share across batches.

    ``engine`` selects how the schema layer's row checks run: ``polars`` (default) evaluates
    them as one vectorized Polars selection; ``pandera`` runs the same expressions as
    pandera.polars checks (``lazy=True``) and reads the per-row ``failure_cases``.  Both
    produce identical results; pandera is slower (see docs/validation.md).  The column and
    dtype contract is always checked with pandera.
    """

    def __init__(self, config: ValidationConfig, *, engine: Engine = "polars") -> None:
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
        self._structure = _structure_schema()
        self._structure_ok: set[tuple[tuple[str, str], ...]] = set()

    @classmethod
    def from_config(cls, config: ValidationConfig, *, engine: Engine = "polars") -> Validator:
        """Compile every quality check and business rule of ``config`` (raises :class:`ValidationSetupError`)."""
        return cls(config, engine=engine)

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
            problems = "; ".join(sorted(set(exc.failure_cases["failure_case"].cast(pl.Utf8).to_list())))
            raise TypeError(f"step {step_id!r}: the micro-batch does not match EVENT_SCHEMA: {problems}") from None
        self._structure_ok.add(key)


def _codes_and_messages(checks: list[RowCheck] | tuple[RowCheck, ...]) -> tuple[pl.Expr, pl.Expr]:
    if not checks:
        empty = pl.lit([], pl.List(pl.Utf8))
        return empty, empty
    codes = pl.concat_list([pl.when(c.violated).then(pl.lit(c.code, pl.Utf8)) for c in checks]).list.drop_nulls()
    messages = pl.concat_list([pl.when(c.violated).then(pl.lit(c.message, pl.Utf8)) for c in checks]).list.drop_nulls()
    return codes, messages


def _schema_layer_pandera(frame: pl.DataFrame, checks: list[RowCheck]) -> pl.DataFrame:
    """Run the schema checks as pandera.polars dataframe checks; return codes/messages per row."""
    needed = sorted({name for c in checks for name in c.violated.meta.root_names()})
    schema = pa.DataFrameSchema(
        checks=[pa.Check(lambda data, v=c.violated: data.lazyframe.select(~v), name=c.code) for c in checks],
        name="text_event_schema_layer",
    )
    n = frame.height
    order = {c.code: i for i, c in enumerate(checks)}
    messages = {c.code: c.message for c in checks}
    try:
        schema.validate(frame.select(needed), lazy=True)
        failures = pl.DataFrame(schema={"index": pl.Int64, "check": pl.Utf8})
    except SchemaErrors as exc:
        failures = exc.failure_cases.select(pl.col("index").cast(pl.Int64), pl.col("check").cast(pl.Utf8))
    grouped = (
        failures.with_columns(pl.col("check").replace_strict(order, return_dtype=pl.Int64).alias("_order"))
        .sort("index", "_order")
        .group_by("index", maintain_order=True)
        .agg(pl.col("check").alias("_codes"))
    )
    out = pl.DataFrame({"index": pl.int_range(0, n, eager=True, dtype=pl.Int64)}).join(grouped, on="index", how="left")
    out = out.with_columns(pl.col("_codes").fill_null(pl.lit([], pl.List(pl.Utf8))))
    return out.select(
        "_codes",
        pl.col("_codes").list.eval(pl.element().replace_strict(messages, return_dtype=pl.Utf8)).alias("_msgs"),
    )


def _finish_layer(batch: MicroBatch, stage: str, codes: pl.Series, msgs: pl.Series, dataset: str) -> MicroBatch:
    mask = codes.list.len() > 0
    if not mask.any():
        return batch
    refused_codes = codes.filter(mask)
    for rule, count in refused_codes.explode().value_counts().iter_rows():
        metrics.REFUSALS.labels(dataset, stage, rule).inc(count)
    return batch.refuse(mask, stage, refused_codes, msgs.filter(mask))


def _rule_layer(batch: MicroBatch, stage: str, rules: list[tuple[RowCheck, str]], dataset: str) -> MicroBatch:
    """Run error rules (refuse) and warn rules (append to ``warnings``) of one layer."""
    if batch.valid.height == 0 or not rules:
        return batch
    errors = [c for c, sev in rules if sev == "error"]
    warns = [c for c, sev in rules if sev == "warn"]
    err_codes, err_msgs = _codes_and_messages(errors)
    warn_codes, _ = _codes_and_messages(warns)
    res = batch.valid.select(err_codes.alias("_e"), err_msgs.alias("_m"), warn_codes.alias("_w"))
    refused = res["_e"].list.len() > 0
    if warns:
        new_warnings = res["_w"]
        kept_warnings = new_warnings.filter(~refused)
        if kept_warnings.list.len().sum():
            for rule, count in kept_warnings.explode().drop_nulls().value_counts().iter_rows():
                metrics.WARNINGS.labels(dataset, rule).inc(count)
            batch = MicroBatch(
                valid=batch.valid.with_columns(pl.col("warnings").list.concat(new_warnings)),
                rejected=batch.rejected,
                now=batch.now,
            )
    return _finish_layer(batch, stage, res["_e"], res["_m"], dataset)


def _null_share_breaches(frame: pl.DataFrame, validator: Validator) -> list[tuple[str, float, float]]:
    fields = [q for q in validator.quality if q.max_null_share is not None]
    if not fields or frame.height < validator.config.min_rows_for_null_share:
        return []
    shares = frame.select([pl.col(q.column).is_null().mean().alias(q.label) for q in fields]).row(0)
    return [(f"quality.{q.label}.max_null_share", share, q.max_null_share) for q, share in zip(fields, shares) if share > q.max_null_share]  # type: ignore[operator]


def validate_batch(batch: MicroBatch, validator: Validator, now: datetime | None = None, *, step_id: str = "validate") -> MicroBatch:
    """Validate the ``valid`` rows of a decoded micro-batch; refused rows move to ``rejected``.

    ``now`` (default ``batch.now``) is the processing time the future-skew check uses.
    Rows refused earlier (at decode) are kept as they are.  The returned batch's
    ``valid`` rows passed every layer and carry the names of warn rules they tripped in
    ``warnings``.  Raises ``TypeError`` naming ``step_id`` if the frame does not match
    ``EVENT_SCHEMA`` (a wiring bug, not bad data).
    """
    if not isinstance(batch, MicroBatch):
        raise TypeError(f"step {step_id!r}: expected a MicroBatch, received {type(batch).__name__}")
    now = now or batch.now
    started = time.perf_counter()
    dataset = validator.dataset
    n_in = batch.valid.height
    n_rejected_before = batch.rejected.height
    if n_in == 0:
        return batch
    validator.check_structure(batch.valid, step_id)
    extra = [attribute_value(key) for key in validator.attributes]
    work = batch.valid.with_columns(extra) if extra else batch.valid
    batch = MicroBatch(valid=work, rejected=batch.rejected, now=batch.now)

    for rule, share, limit in _null_share_breaches(work, validator):
        metrics.BATCH_BREACHES.labels(dataset, rule).inc()
        log.warning(json.dumps({"event": "validation_batch_breach", "step": step_id, "dataset": dataset, "rule": rule, "share": round(share, 4), "limit": limit, "rows": n_in}))

    # Layer 1: schema.
    checks = schema_checks(validator.config, now)
    if validator.engine == "pandera":
        res = _schema_layer_pandera(work, checks)
    else:
        codes, msgs = _codes_and_messages(checks)
        res = work.select(codes.alias("_codes"), msgs.alias("_msgs"))
    ok = res["_codes"].list.len() == 0
    # event_id unique within the batch: the first otherwise-valid occurrence wins.
    dup = work.select(
        (pl.when(pl.lit(ok)).then(pl.col("event_id")).is_first_distinct().not_() & pl.lit(ok)).alias("dup")
    )["dup"]
    if dup.any():
        res = res.with_columns(
            pl.when(pl.lit(dup)).then(pl.lit(["schema.event_id_unique"], pl.List(pl.Utf8))).otherwise(pl.col("_codes")).alias("_codes"),
            pl.when(pl.lit(dup)).then(pl.lit(["event_id repeats an earlier record of the same batch"], pl.List(pl.Utf8))).otherwise(pl.col("_msgs")).alias("_msgs"),
        )
    batch = _finish_layer(batch, "schema", res["_codes"], res["_msgs"], dataset)

    # Layer 2: quality.
    quality = [(check, q.severity) for q in validator.quality for check in q.checks]
    batch = _rule_layer(batch, "quality", quality, dataset)

    # Layer 3: business rules.
    business = [(RowCheck(r.code, r.message, r.expr), r.severity) for r in validator.business]
    batch = _rule_layer(batch, "business", business, dataset)

    if extra:
        batch = MicroBatch(valid=batch.valid.drop([attribute_column(k) for k in validator.attributes]), rejected=batch.rejected, now=batch.now)
    refused = batch.rejected.height - n_rejected_before
    warned = int((batch.valid["warnings"].list.len() > 0).sum()) if batch.valid.height else 0
    metrics.RECORDS.labels(dataset, "refused").inc(refused)
    metrics.RECORDS.labels(dataset, "warned").inc(warned)
    metrics.RECORDS.labels(dataset, "valid").inc(batch.valid.height)
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
