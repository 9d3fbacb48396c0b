"""The privacy stage over a :class:`MicroBatch`: mask, classify, apply DLP rules, audit.

``mask_batch`` is a plain function the flows call on every micro-batch, after validation
and before features, models and every sink:

- ``valid.text`` and ``rejected.text`` (null allowed) are masked; so are the values of
  ``valid.attributes`` (``privacy.mask_attributes``) and ``rejected.reasons``;
- ``valid.user_id`` becomes ``<USER_ID:token>`` (``privacy.pseudonymize_user_id``);
- ``valid`` gains the columns of :func:`pii_output_schema` (the same for every batch);
- warn rules add ``dlp:<rule>`` to ``warnings``;
- rows holding an entity whose strategy is ``drop``, or firing a ``block`` rule, are
  refused at stage ``privacy`` with codes ``pii_drop:<TYPE>`` / ``dlp_block:<rule>``.

>>> from driftline.config.privacy import PrivacyConfig
>>> from driftline.operators.batch import EVENT_SCHEMA, MicroBatch
>>> m = PiiMasker.from_config(PrivacyConfig(), key=b"0123456789abcdef")
>>> rows = pl.DataFrame({"event_id": ["e1"], "text": ["mail me: ann@example.org"], "user_id": ["u1"]})
>>> batch = MicroBatch(valid=rows.with_columns([pl.lit(None, t).alias(c) for c, t in EVENT_SCHEMA.items() if c not in rows.columns]))
>>> out = mask_batch(batch, m).valid
>>> out["text"][0].startswith("mail me: <EMAIL:"), out["pii_email"][0], out["classification"][0]
(True, 1, 'confidential')
"""

from __future__ import annotations

import re

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from driftline.config import PipelineConfig
from driftline.config.privacy import LEVELS, PrivacyConfig
from driftline.operators.batch import MicroBatch
from driftline.operators.decode import AVRO_MAGIC, parse_payload
from driftline.operators.pii.engine import BUILTIN_ENTITIES, FINDING_DTYPE, PiiMasker, ScanResult

STAGE = "privacy"


def entity_column(entity: str) -> str:
    """``EMAIL`` -> ``pii_email``."""
    return f"pii_{entity.lower()}"


def entities_for(cfg: PrivacyConfig | PipelineConfig) -> tuple[str, ...]:
    """Entity types with a count column: the built-ins, then custom entities sorted."""
    p = cfg.privacy if isinstance(cfg, PipelineConfig) else cfg
    custom = sorted({c.entity for c in p.custom_recognizers} - set(BUILTIN_ENTITIES))
    return BUILTIN_ENTITIES + tuple(custom)


def pii_output_schema(cfg: PrivacyConfig | PipelineConfig) -> dict[str, pl.DataType]:
    """Columns :func:`mask_batch` adds to ``valid``; depends on configuration only, never on data."""
    schema: dict[str, pl.DataType] = {entity_column(e): pl.Int32 for e in entities_for(cfg)}
    schema.update(
        {
            "pii_total": pl.Int32,
            "pii_findings": pl.List(FINDING_DTYPE),
            "classification": pl.Utf8,
            "route_local": pl.Boolean,
            "dlp_rules": pl.List(pl.Utf8),
        }
    )
    return schema


AUDIT_BASE_SCHEMA: dict[str, pl.DataType] = {
    "src_topic": pl.Utf8,
    "src_partition": pl.Int32,
    "src_offset": pl.Int64,
    "event_id": pl.Utf8,
    "source": pl.Utf8,
    "tenant": pl.Utf8,
    "processed_at": pl.Datetime("ms", "UTC"),
    "outcome": pl.Utf8,
    "entity_types": pl.List(pl.Utf8),
    "recognizers": pl.List(pl.Utf8),
}


def audit_schema(cfg: PrivacyConfig | PipelineConfig) -> dict[str, pl.DataType]:
    """Columns of :func:`audit_frame`: coordinates, outcome, entity types and counts,
    recognizers, classification, rules fired and refusal codes. Never a value."""
    out = dict(AUDIT_BASE_SCHEMA)
    out.update({k: t for k, t in pii_output_schema(cfg).items() if k != "pii_findings"})
    out["reason_codes"] = pl.List(pl.Utf8)
    return out


# ----------------------------------------------------------------------------- classification


def classify(masker: PiiMasker, sources: pl.Series, scan: ScanResult) -> tuple[pl.Series, pl.Series]:
    """Classification label and ``route_local`` flag per row (vectorized with numpy)."""
    cfg = masker.config
    n = sources.len()
    rank = {name: i for i, name in enumerate(LEVELS)}
    base = rank[cfg.default_level]
    if cfg.source_levels:
        mapping = {s: rank[lvl] for s, lvl in cfg.source_levels.items()}
        level = sources.cast(pl.Utf8).replace_strict(mapping, default=base, return_dtype=pl.Int8).fill_null(base).to_numpy().astype(np.int8)
    else:
        level = np.full(n, base, dtype=np.int8)
    for entity, counts in scan.counts.items():
        if counts.any():
            np.maximum(level, np.where(counts > 0, rank[cfg.level_for(entity)], 0).astype(np.int8), out=level)
    route = np.zeros(n, dtype=bool)
    for rule in masker.rules:
        fired = scan.rules[rule.name].to_numpy()
        if fired.any():
            np.maximum(level, np.where(fired, rank[rule.level], 0).astype(np.int8), out=level)
            if rule.action == "route_local":
                route |= fired
    if cfg.route_local_at is not None:
        route |= level >= rank[cfg.route_local_at]
    labels = np.array(LEVELS, dtype=object)[level] if n else np.array([], dtype=object)
    return pl.Series("classification", labels.tolist(), dtype=pl.Utf8), pl.Series("route_local", route, dtype=pl.Boolean)


def _rules_list(scan: ScanResult, names: list[str], n: int, alias: str) -> pl.Series:
    if not names:
        return pl.Series(alias, [[]] * n, dtype=pl.List(pl.Utf8)) if n else pl.Series(alias, [], dtype=pl.List(pl.Utf8))
    frame = pl.DataFrame({name: scan.rules[name] for name in names})
    return frame.select(
        pl.concat_list([pl.when(pl.col(name)).then(pl.lit(name)).otherwise(pl.lit(None, pl.Utf8)) for name in names]).list.drop_nulls().alias(alias)
    ).to_series()


# ----------------------------------------------------------------------------- list masking


def _mask_list_of_strings(masker: PiiMasker, col: pl.Series) -> pl.Series:
    """Mask every string inside a ``List(Utf8)`` column, keeping list shapes and nulls."""
    arr = col.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    values = pl.Series(arr.flatten())
    if values.len() == 0:
        return col
    masked = masker.mask_series(values).to_arrow()
    cls = pa.LargeListArray if pa.types.is_large_list(arr.type) else pa.ListArray
    rebuilt = cls.from_arrays(_fresh_offsets(arr), masked, mask=arr.is_null())
    return pl.Series(col.name, rebuilt).cast(col.dtype)


def _mask_attributes(masker: PiiMasker, col: pl.Series) -> pl.Series:
    """Mask the ``value`` field of a ``List(Struct{key, value})`` column."""
    if col.len() == 0 or col.null_count() == col.len():
        return col
    arr = col.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    structs = arr.flatten()
    if len(structs) == 0:
        return col
    keys = structs.field("key")
    vals = masker.mask_series(pl.Series(structs.field("value"))).to_arrow()
    new_structs = pa.StructArray.from_arrays([keys, vals.cast(keys.type)], names=["key", "value"])
    cls = pa.LargeListArray if pa.types.is_large_list(arr.type) else pa.ListArray
    return pl.Series(col.name, cls.from_arrays(_fresh_offsets(arr), new_structs, mask=arr.is_null())).cast(col.dtype)


def _fresh_offsets(arr: pa.ListArray | pa.LargeListArray) -> pa.Array:
    """List offsets rebased to 0 in a new buffer: a sliced list array (a row slice of a
    batch) carries offsets into its parent's values, which ``from_arrays`` rejects."""
    offsets = np.asarray(arr.offsets)
    return pa.array(offsets - offsets[0], type=arr.offsets.type)


# ----------------------------------------------------------------------------- the stage


def _annotate(batch: MicroBatch, masker: PiiMasker) -> tuple[pl.DataFrame, pl.Series, list[list[str]], list[list[str]]]:
    """Masked ``valid`` with the privacy columns, the refusal mask, and codes/reasons of refused rows."""
    valid = batch.valid
    cfg = masker.config
    n = valid.height
    scan = masker.scan(valid["text"])
    entity_cols = [pl.Series(entity_column(e), scan.counts[e], dtype=pl.Int32) for e in masker.entities]
    total = np.sum([scan.counts[e] for e in masker.entities], axis=0, dtype=np.int32) if n else np.zeros(0, np.int32)
    classification, route_local = classify(masker, valid["source"], scan)
    rule_names = [r.name for r in masker.rules]
    warn_names = [r.name for r in masker.rules if r.action == "warn"]
    fired = _rules_list(scan, rule_names, n, "dlp_rules")
    new_cols = [scan.masked.alias("text"), *entity_cols, pl.Series("pii_total", total, dtype=pl.Int32), scan.findings.alias("pii_findings"), classification, route_local, fired]
    if cfg.pseudonymize_user_id and "user_id" in valid.columns:
        new_cols.append(masker.pseudonymize_values(valid["user_id"]).alias("user_id"))
    if cfg.mask_attributes and "attributes" in valid.columns:
        new_cols.append(_mask_attributes(masker, valid["attributes"]))
    out = valid.with_columns(new_cols)
    if warn_names and "warnings" in out.columns:
        warn = _rules_list(scan, warn_names, n, "_w").list.eval(pl.lit("dlp:") + pl.element())
        out = out.with_columns(pl.concat_list([pl.col("warnings").fill_null(pl.lit([], pl.List(pl.Utf8))), warn]).alias("warnings"))

    drop_entities = [e for e in masker.entities if masker.strategy_for(e) == "drop"]
    block_rules = [r for r in masker.rules if r.action == "block"]
    refuse = np.zeros(n, dtype=bool)
    for e in drop_entities:
        refuse |= scan.counts[e] > 0
    for r in block_rules:
        refuse |= scan.rules[r.name].to_numpy()
    codes: list[list[str]] = []
    reasons: list[list[str]] = []
    for i in np.flatnonzero(refuse).tolist():
        c: list[str] = []
        why: list[str] = []
        for e in drop_entities:
            if scan.counts[e][i]:
                c.append(f"pii_drop:{e}")
                why.append(f"the text contains {e}, whose masking strategy is drop")
        for r in block_rules:
            if scan.rules[r.name][i]:
                c.append(f"dlp_block:{r.name}")
                why.append(f"blocked by DLP rule {r.name!r} (severity {r.severity})")
        codes.append(c)
        reasons.append(why)
    return out, pl.Series("refuse", refuse, dtype=pl.Boolean), codes, reasons


def _mask_rejected(rejected: pl.DataFrame, masker: PiiMasker) -> pl.DataFrame:
    if rejected.height == 0:
        return rejected
    cols = [masker.mask_series(rejected["text"]).alias("text")]
    if "reasons" in rejected.columns:
        cols.append(_mask_list_of_strings(masker, rejected["reasons"]))
    return rejected.with_columns(cols)


def mask_batch_audited(batch: MicroBatch, masker: PiiMasker) -> tuple[MicroBatch, pl.DataFrame]:
    """:func:`mask_batch` plus the audit rows of every event it saw (passed and refused)."""
    rejected = _mask_rejected(batch.rejected, masker)
    valid, refuse, codes, reasons = _annotate(batch, masker)
    audit = _audit_rows(valid, refuse, codes, batch, masker)
    out = MicroBatch(valid=valid, rejected=rejected, now=batch.now).refuse(refuse, STAGE, codes, reasons)
    return out, audit


def mask_batch(batch: MicroBatch, masker: PiiMasker) -> MicroBatch:
    """Mask, classify and apply DLP rules to a micro-batch (see the module docstring)."""
    return mask_batch_audited(batch, masker)[0]


def _audit_rows(valid: pl.DataFrame, refuse: pl.Series, codes: list[list[str]], batch: MicroBatch, masker: PiiMasker) -> pl.DataFrame:
    schema = audit_schema(masker.config)
    n = valid.height
    if n == 0:
        return pl.DataFrame(schema=schema)
    all_codes: list[list[str]] = [[] for _ in range(n)]
    for i, c in zip(np.flatnonzero(refuse.to_numpy()).tolist(), codes):
        all_codes[i] = c
    frame = valid.with_columns(
        pl.lit(batch.now).cast(pl.Datetime("ms", "UTC")).alias("processed_at"),
        pl.when(refuse).then(pl.lit("refused")).otherwise(pl.lit("passed")).alias("outcome"),
        pl.col("pii_findings").list.eval(pl.element().struct.field("type")).list.unique(maintain_order=True).alias("entity_types"),
        pl.col("pii_findings").list.eval(pl.element().struct.field("recognizer")).list.unique(maintain_order=True).alias("recognizers"),
        pl.Series("reason_codes", all_codes, dtype=pl.List(pl.Utf8)),
    )
    for c, t in schema.items():
        if c not in frame.columns:
            frame = frame.with_columns(pl.lit(None, t).alias(c))
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()])


def audit_frame(batch: MicroBatch, masker: PiiMasker) -> pl.DataFrame:
    """Audit rows of a batch already through :func:`mask_batch`: one per passed event, plus one
    per event refused at stage ``privacy`` (counts null there; its codes name the types/rules)."""
    schema = audit_schema(masker.config)
    passed = _audit_rows(batch.valid, pl.Series([False] * batch.valid.height, dtype=pl.Boolean), [], batch, masker) if "pii_total" in batch.valid.columns else pl.DataFrame(schema=schema)
    refused = batch.rejected.filter(pl.col("stage") == STAGE)
    if refused.height == 0:
        return passed
    rows = refused.with_columns(
        pl.lit(batch.now).cast(pl.Datetime("ms", "UTC")).alias("processed_at"),
        pl.lit("refused").alias("outcome"),
        pl.col("reason_codes").list.eval(pl.element().filter(pl.element().str.starts_with("pii_drop:")).str.slice(9)).alias("entity_types"),
        pl.col("reason_codes").list.eval(pl.element().filter(pl.element().str.starts_with("dlp_block:")).str.slice(10)).alias("dlp_rules"),
    )
    for c, t in schema.items():
        if c not in rows.columns:
            rows = rows.with_columns(pl.lit(None, t).alias(c))
    return pl.concat([passed, rows.select([pl.col(c).cast(t) for c, t in schema.items()])], how="vertical")


__all__ = [
    "STAGE",
    "audit_frame",
    "audit_schema",
    "classify",
    "entities_for",
    "entity_column",
    "mask_batch",
    "mask_batch_audited",
    "pii_output_schema",
]


# ----------------------------------------------------------------------------- dead-letter masking

_USER_ID_JSON = re.compile(rb'("user_id"\s*:\s*")((?:[^"\\]|\\.)*)(")')


def mask_dead_letter_payloads(raw: pl.Series, masker: PiiMasker) -> pl.Series:
    """Masked copies of refused payloads for ``privacy.mask_dead_letter``.

    Avro single-object payloads are re-encoded as JSON first (masked Avro could not be
    decoded anyway), ``"user_id"`` values are pseudonymized like the ``user_id`` column, and
    the text is masked with :meth:`PiiMasker.mask_payloads`.  Payloads that are not valid
    JSON are masked as text all the same.
    """
    prepared: list[bytes | None] = []
    for value in raw.to_list():
        if value is not None and value[:2] == AVRO_MAGIC:
            record = parse_payload(value)
            if record is not None:
                value = orjson.dumps(record, default=str, option=orjson.OPT_NAIVE_UTC)
        if value is not None and b'"user_id"' in value:
            value = _USER_ID_JSON.sub(lambda m: m.group(1) + _user_token(masker, m.group(2)) + m.group(3), value)
        prepared.append(value)
    return masker.mask_payloads(pl.Series(raw.name, prepared, dtype=pl.Binary))


def _user_token(masker: PiiMasker, escaped: bytes) -> bytes:
    try:
        value = orjson.loads(b'"' + escaped + b'"')
    except orjson.JSONDecodeError:
        value = escaped.decode("utf-8", "replace")
    return masker.pseudonymize_values(pl.Series([value], dtype=pl.Utf8))[0].encode()
