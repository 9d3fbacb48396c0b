"""The privacy stage over a :class:`MicroBatch`: mask, classify, apply DLP rules, audit.

``mask_batch`` is a plain function the flows call on every micro-batch, after validation
and before features, models and every sink:

- ``valid.text`` and ``rejected.text`` (null allowed) are masked; so are the values of
  ``valid.attributes`` (``privacy.mask_attributes``), ``rejected.reasons``, and the
  identifiers ``event_id``, ``source``, ``tenant`` and attribute keys of both
  (``privacy.identifiers``: ``mask`` in place, or ``refuse`` the record);
- ``valid.user_id`` becomes ``<USER_ID:token>`` (``privacy.pseudonymize_user_id``);
- ``valid`` gains the columns of :func:`pii_output_schema` (the same for every batch);
- warn rules add ``dlp:<rule>`` to ``warnings``;
- rows holding an entity whose strategy is ``drop``, firing a ``block`` rule, over the
  per-record budget (``privacy.budget``) or, with ``identifiers: refuse``, holding PII in an
  identifier are refused at stage ``privacy`` with codes ``pii_drop:<TYPE>``,
  ``dlp_block:<rule>``, ``pii_budget:<limit>`` / ``pii_in_identifier:<field>``.

Everything is one scan of all the batch's strings (texts, identifiers, attribute keys
and values together) and column operations: no per-row Python objects are built.

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
from dataclasses import dataclass

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from driftline.config import PipelineConfig
from driftline.config.privacy import LEVELS, PrivacyConfig, entity_names
from driftline.operators.batch import MicroBatch, names_where, owned_array
from driftline.operators.decode import AVRO_MAGIC, parse_payload
from driftline.operators.pii.engine import FINDING_DTYPE, PiiMasker, ScanResult

STAGE = "privacy"
#: Identifier fields scanned for PII (``privacy.identifiers``), besides attribute keys.
IDENTIFIERS = ("event_id", "source", "tenant")
#: Refusal codes of the budget and what each means (the reason text of a refused record).
BUDGET_REASONS = {
    "pii_budget:too_long": "a field is longer than privacy.budget.max_chars characters; it was cut before masking",
    "pii_budget:too_many_attributes": "the record has more attributes than privacy.budget.max_attributes",
    "pii_budget:too_many_candidates": "a field has more PII candidates than privacy.budget.max_candidates (or one too costly to check); it was not scanned to the end, so its text is not stored",
}


def entity_column(entity: str) -> str:
    """``EMAIL`` -> ``pii_email``."""
    return f"pii_{entity.lower()}"


def entities_for(cfg: PrivacyConfig | PipelineConfig) -> tuple[str, ...]:
    """Entity types with a count column: the registered ones, then custom entities sorted."""
    p = cfg.privacy if isinstance(cfg, PipelineConfig) else cfg
    builtin = entity_names()
    custom = sorted({c.entity for c in p.custom_recognizers} - set(builtin))
    return builtin + tuple(custom)


def pii_output_schema(cfg: PrivacyConfig | PipelineConfig) -> dict[str, pl.DataType]:
    """Columns :func:`mask_batch` adds to ``valid``; depends on configuration only, never on data."""
    schema: dict[str, pl.DataType] = {entity_column(e): pl.Int32 for e in entities_for(cfg)}
    schema.update(
        {
            "pii_total": pl.Int32,
            "pii_findings": pl.List(FINDING_DTYPE),
            "masked_fields": pl.List(pl.Utf8),
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
    recognizers, fields other than the text where PII was masked, classification, rules
    fired and refusal codes. Never a value."""
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
        if counts[:n].any():
            np.maximum(level, np.where(counts[:n] > 0, rank[cfg.level_for(entity)], 0).astype(np.int8), out=level)
    route = np.zeros(n, dtype=bool)
    for rule in masker.rules:
        fired = scan.rules[rule.name].to_numpy()[:n]
        if fired.any():
            np.maximum(level, np.where(fired, rank[rule.level], 0).astype(np.int8), out=level)
            if rule.action == "route_local":
                route |= fired
    if cfg.route_local_at is not None:
        route |= level >= rank[cfg.route_local_at]
    labels = pl.Series("classification", list(LEVELS), dtype=pl.Utf8).gather(level.astype(np.int64)) if n else pl.Series("classification", [], dtype=pl.Utf8)
    return labels.rename("classification"), pl.Series("route_local", route, dtype=pl.Boolean)


# ----------------------------------------------------------------------------- list masking


def _combined(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _fresh_offsets(arr: pa.ListArray | pa.LargeListArray) -> pa.Array:
    """List offsets rebased to 0 in a new buffer: a sliced list array (a row slice of a
    batch) carries offsets into its parent's values, which ``from_arrays`` rejects."""
    offsets = np.asarray(arr.offsets)
    return owned_array(offsets - offsets[0], arr.offsets.type)


def _rebuild_list(col: pl.Series, arr: pa.ListArray | pa.LargeListArray, values: pa.Array) -> pl.Series:
    cls = pa.LargeListArray if pa.types.is_large_list(arr.type) else pa.ListArray
    return pl.Series(col.name, cls.from_arrays(_fresh_offsets(arr), values, mask=arr.is_null())).cast(col.dtype)


def _list_values(col: pl.Series) -> pl.Series:
    """The strings inside a ``List(Utf8)`` column, flattened."""
    return pl.Series(_combined(col.to_arrow()).flatten()).cast(pl.Utf8)


def _with_list_values(col: pl.Series, values: pl.Series) -> pl.Series:
    """``col`` with its flattened strings replaced by ``values`` (shapes and nulls kept)."""
    if values.len() == 0:
        return col
    return _rebuild_list(col, _combined(col.to_arrow()), values.to_arrow())


def _mask_list_of_strings(masker: PiiMasker, col: pl.Series) -> pl.Series:
    """Mask every string inside a ``List(Utf8)`` column, keeping list shapes and nulls."""
    return _with_list_values(col, masker.mask_series(_list_values(col)))


def _mask_attributes(masker: PiiMasker, col: pl.Series) -> pl.Series:
    """Mask the ``key`` and ``value`` fields of a ``List(Struct{key, value})`` column (the
    same path the stage takes: one scan, then the list rebuilt from Arrow offsets)."""
    frame = pl.DataFrame({"attributes": col})
    seg = _segments(frame, masker, text=False)
    return _apply(frame, seg, masker.scan(seg.strings))["attributes"]


# ----------------------------------------------------------------------------- one scan per batch


@dataclass
class _Segments:
    """All strings of a frame that the privacy stage scans, in one column, and where each came from."""

    strings: pl.Series
    n: int  # rows of the frame
    blocks: dict[str, tuple[int, int]]  # field -> [start, end) within strings
    attr_rows: np.ndarray  # row of each attribute (keys, then values, follow this order)
    attr_list: pa.Array | None  # the frame's attributes as Arrow (for rebuilding)


def _segments(frame: pl.DataFrame, masker: PiiMasker, *, text: bool = True, attributes: bool = True, skip_attrs: np.ndarray | None = None) -> _Segments:
    n = frame.height
    parts: list[pl.Series] = []
    blocks: dict[str, tuple[int, int]] = {}
    pos = 0

    def add(name: str, s: pl.Series) -> None:
        nonlocal pos
        parts.append(s.cast(pl.Utf8).rename("s"))
        blocks[name] = (pos, pos + s.len())
        pos += s.len()

    if text:
        add("text", frame["text"])
    for f in IDENTIFIERS:
        if f in frame.columns:
            add(f, frame[f])
    attr_rows = np.zeros(0, dtype=np.int64)
    attr_list = None
    if attributes and "attributes" in frame.columns and n:
        attr_list = _combined(frame["attributes"].to_arrow())
        lengths = np.asarray(attr_list.value_lengths().fill_null(0), dtype=np.int64)
        attr_rows = np.repeat(np.arange(n), lengths)
        structs = attr_list.flatten()
        keys, vals = pl.Series(structs.field("key")), pl.Series(structs.field("value"))
        if skip_attrs is not None and skip_attrs.any():  # over the attribute budget: not scanned, never stored
            keep = ~skip_attrs[attr_rows]
            keys = keys.zip_with(pl.Series(keep), pl.Series([None] * keys.len(), dtype=pl.Utf8))
            vals = vals.zip_with(pl.Series(keep), pl.Series([None] * vals.len(), dtype=pl.Utf8))
        add("attribute_key", keys)
        if masker.config.mask_attributes:
            add("attribute_value", vals)
    strings = pl.concat(parts) if parts else pl.Series("s", [], dtype=pl.Utf8)
    return _Segments(strings, n, blocks, attr_rows, attr_list)


def _per_row(seg: _Segments, field: str, values: np.ndarray) -> np.ndarray:
    """Any-of ``values`` (bool per string) of ``field``, per row of the frame."""
    a, b = seg.blocks[field]
    v = values[a:b]
    if field.startswith("attribute"):
        out = np.zeros(seg.n, dtype=bool)
        if len(v):
            out[seg.attr_rows[v]] = True  # any of the row's attributes
        return out
    return v.copy()


def _apply(frame: pl.DataFrame, seg: _Segments, scan: ScanResult) -> pl.DataFrame:
    """``frame`` with every scanned field replaced by its masked form."""
    cols = []
    for f, (a, b) in seg.blocks.items():
        if not f.startswith("attribute"):
            cols.append(scan.masked.slice(a, b - a).alias(f).cast(frame.schema[f]))
    if seg.attr_list is not None and "attribute_key" in seg.blocks:
        structs = seg.attr_list.flatten()
        a, b = seg.blocks["attribute_key"]
        keys = scan.masked.slice(a, b - a).to_arrow()
        if "attribute_value" in seg.blocks:
            a, b = seg.blocks["attribute_value"]
            vals = scan.masked.slice(a, b - a).to_arrow()
        else:
            vals = structs.field("value")
        values = pa.StructArray.from_arrays([keys.cast(pa.large_string()), vals.cast(pa.large_string())], names=["key", "value"])
        cols.append(_rebuild_list(frame["attributes"], seg.attr_list, values))
    return frame.with_columns(cols) if cols else frame


# ----------------------------------------------------------------------------- the stage


def _attribute_budget(valid: pl.DataFrame, masker: PiiMasker) -> tuple[np.ndarray, np.ndarray]:
    """Rows with more attributes than the budget, and rows with an attribute key or value
    longer than ``budget.max_chars`` (vectorized, before any scan: their attributes are
    not scanned, since a refused record's attributes are never stored)."""
    n = valid.height
    if "attributes" not in valid.columns or n == 0:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    b = masker.config.budget
    attrs = valid["attributes"]
    too_many = attrs.list.len().fill_null(0).to_numpy() > b.max_attributes
    arr = _combined(attrs.to_arrow())
    structs = arr.flatten()
    too_long = np.zeros(n, dtype=bool)
    if len(structs):
        lengths = np.maximum(np.asarray(pc.fill_null(pc.utf8_length(structs.field("key")), 0)), np.asarray(pc.fill_null(pc.utf8_length(structs.field("value")), 0)))
        rows = np.repeat(np.arange(n), np.asarray(arr.value_lengths().fill_null(0), dtype=np.int64))
        too_long[rows[lengths > b.max_chars]] = True
    return too_many, too_long


def _annotate(valid: pl.DataFrame, masker: PiiMasker, seg: _Segments, scan: ScanResult, too_many: np.ndarray, too_long: np.ndarray) -> tuple[pl.DataFrame, np.ndarray, pl.Series, pl.Series]:
    """Masked ``valid`` with the privacy columns, the refusal mask, and codes/reasons per row ([] when passed)."""
    cfg = masker.config
    n = valid.height
    text_scan = scan.slice(0, n)

    entity_cols = [pl.Series(entity_column(e), text_scan.counts[e], dtype=pl.Int32) for e in masker.entities]
    classification, route_local = classify(masker, valid["source"], text_scan)
    found = scan.total > 0
    other_fields = {f: _per_row(seg, f, found) for f in seg.blocks if f != "text"}
    field_flags: dict[str, np.ndarray] = {}
    for f, flags in other_fields.items():
        name = "attributes" if f.startswith("attribute") else f
        field_flags[name] = field_flags.get(name, np.zeros(n, dtype=bool)) | flags
    new_cols = [
        *entity_cols,
        pl.Series("pii_total", text_scan.total, dtype=pl.Int32),
        text_scan.findings.alias("pii_findings"),
        names_where("masked_fields", n, list(field_flags.items())),
        classification,
        route_local,
        names_where("dlp_rules", n, [(r.name, text_scan.rules[r.name].to_numpy()) for r in masker.rules]),
    ]
    if cfg.pseudonymize_user_id and "user_id" in valid.columns:
        new_cols.append(masker.pseudonymize_values(valid["user_id"]).alias("user_id"))
    out = _apply(valid, seg, scan).with_columns(new_cols)
    warn = {r.name: text_scan.rules[r.name].to_numpy() for r in masker.rules if r.action == "warn"}
    if warn and "warnings" in out.columns:
        out = out.with_columns(pl.concat_list([pl.col("warnings").fill_null(pl.lit([], pl.List(pl.Utf8))), names_where("_w", n, [(f"dlp:{k}", v) for k, v in warn.items()])]).alias("warnings"))

    # Refusals: one flag per code, turned into code and reason lists by column expressions.
    codes: dict[str, np.ndarray] = {}
    reasons: dict[str, str] = {}
    for e in masker.entities:
        if masker.strategy_for(e) == "drop":
            codes[f"pii_drop:{e}"] = text_scan.counts[e] > 0
            reasons[f"pii_drop:{e}"] = f"the text contains {e}, whose masking strategy is drop"
    for r in masker.rules:
        if r.action == "block":
            codes[f"dlp_block:{r.name}"] = text_scan.rules[r.name].to_numpy()
            reasons[f"dlp_block:{r.name}"] = f"blocked by DLP rule {r.name!r} (severity {r.severity})"
    if cfg.identifiers == "refuse":
        for f, flags in other_fields.items():
            if f != "attribute_value":
                codes[f"pii_in_identifier:{f}"] = flags
                reasons[f"pii_in_identifier:{f}"] = f"the {f.replace('_', ' ')} holds PII and privacy.identifiers is refuse"
    budget_flags = {
        "pii_budget:too_long": _any_field(seg, scan.cut) | too_long,
        "pii_budget:too_many_attributes": too_many,
        "pii_budget:too_many_candidates": _any_field(seg, scan.over_budget),
    }
    for code, flags in budget_flags.items():
        codes[code] = flags
        reasons[code] = BUDGET_REASONS[code]
    refuse = np.zeros(n, dtype=bool)
    for flags in codes.values():
        refuse |= flags
    over = budget_flags["pii_budget:too_many_candidates"]
    if over.any():  # not fully scanned: nothing of it is stored
        out = out.with_columns(pl.when(pl.Series(over)).then(pl.lit(None, pl.Utf8)).otherwise(pl.col(f)).alias(f) for f in ("text", *IDENTIFIERS) if f in out.columns)
    fired = {c: f for c, f in codes.items() if f.any()}
    code_list = names_where("reason_codes", n, list(fired.items()))
    reason_list = names_where("reasons", n, [(reasons[c], f) for c, f in fired.items()])
    return out, refuse, code_list, reason_list


def _any_field(seg: _Segments, values: np.ndarray) -> np.ndarray:
    out = np.zeros(seg.n, dtype=bool)
    for f in seg.blocks:
        out |= _per_row(seg, f, values)
    return out


def mask_batch_audited(batch: MicroBatch, masker: PiiMasker) -> tuple[MicroBatch, pl.DataFrame]:
    """:func:`mask_batch` plus the audit rows of every event it saw (passed and refused).

    Every string of the batch (valid and refused rows, reasons included) goes through ONE
    :meth:`PiiMasker.scan`, so the per-call costs are paid once per batch."""
    valid, rejected = batch.valid, batch.rejected
    too_many, too_long = _attribute_budget(valid, masker)
    vseg = _segments(valid, masker, skip_attrs=too_many | too_long)
    rseg = _segments(rejected, masker, attributes=False)
    reasons = _list_values(rejected["reasons"]) if "reasons" in rejected.columns and rejected.height else pl.Series("s", [], dtype=pl.Utf8)
    nv, nr = vseg.strings.len(), rseg.strings.len()
    scan = masker.scan(pl.concat([vseg.strings, rseg.strings, reasons.rename("s")]), rule_rows=valid.height)
    masked_rejected = _apply(rejected, rseg, scan.slice(nv, nr))
    if reasons.len():
        masked_rejected = masked_rejected.with_columns(_with_list_values(rejected["reasons"], scan.masked.slice(nv + nr, reasons.len())))
    out_valid, refuse, codes, reason_list = _annotate(valid, masker, vseg, scan.slice(0, nv), too_many, too_long)
    audit = _audit_rows(out_valid, refuse, codes, batch, masker)
    mask = pl.Series("refuse", refuse, dtype=pl.Boolean)
    out = MicroBatch(valid=out_valid, rejected=masked_rejected, now=batch.now).refuse(mask, STAGE, codes.filter(mask), reason_list.filter(mask))
    return out, audit


def mask_batch(batch: MicroBatch, masker: PiiMasker) -> MicroBatch:
    """Mask, classify and apply DLP rules to a micro-batch (see the module docstring)."""
    return mask_batch_audited(batch, masker)[0]


def _audit_rows(valid: pl.DataFrame, refuse: np.ndarray, codes: pl.Series, batch: MicroBatch, masker: PiiMasker) -> pl.DataFrame:
    schema = audit_schema(masker.config)
    if valid.height == 0:
        return pl.DataFrame(schema=schema)
    frame = valid.with_columns(
        pl.lit(batch.now).cast(pl.Datetime("ms", "UTC")).alias("processed_at"),
        pl.when(pl.Series(refuse)).then(pl.lit("refused")).otherwise(pl.lit("passed")).alias("outcome"),
        pl.col("pii_findings").list.eval(pl.element().struct.field("type")).list.unique(maintain_order=True).alias("entity_types"),
        pl.col("pii_findings").list.eval(pl.element().struct.field("recognizer")).list.unique(maintain_order=True).alias("recognizers"),
        codes.alias("reason_codes"),
    )
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in schema.items()])


def audit_frame(batch: MicroBatch, masker: PiiMasker) -> pl.DataFrame:
    """Audit rows of a batch already through :func:`mask_batch`: one per passed event, plus one
    per event refused at stage ``privacy`` (counts null there; its codes name the types/rules)."""
    schema = audit_schema(masker.config)
    n = batch.valid.height
    passed = _audit_rows(batch.valid, np.zeros(n, dtype=bool), pl.repeat(pl.lit([], pl.List(pl.Utf8)), n, eager=True), batch, masker) if "pii_total" in batch.valid.columns else pl.DataFrame(schema=schema)
    refused = batch.rejected.filter(pl.col("stage") == STAGE)
    if refused.height == 0:
        return passed
    rows = refused.with_columns(
        pl.lit(batch.now).cast(pl.Datetime("ms", "UTC")).alias("processed_at"),
        pl.lit("refused").alias("outcome"),
        pl.col("reason_codes").list.eval(pl.element().filter(pl.element().str.starts_with("pii_drop:")).str.slice(9)).alias("entity_types"),
        pl.col("reason_codes").list.eval(pl.element().filter(pl.element().str.starts_with("dlp_block:")).str.slice(10)).alias("dlp_rules"),
    )
    rows = rows.select([pl.col(c).cast(t) if c in rows.columns else pl.lit(None, t).alias(c) for c, t in schema.items()])
    return pl.concat([passed, rows], how="vertical")


# ----------------------------------------------------------------------------- dead-letter masking

_USER_ID_JSON = re.compile(rb'("user_id"\s*:\s*")((?:[^"\\]|\\.)*)(")')


def mask_dead_letter_payloads(raw: pl.Series, masker: PiiMasker) -> pl.Series:
    """Masked copies of refused payloads for ``privacy.mask_dead_letter``.

    Avro single-object payloads are re-encoded as JSON first (masked Avro could not be
    decoded anyway), ``"user_id"`` values are pseudonymized like the ``user_id`` column, and
    the text is masked with :meth:`PiiMasker.mask_payloads`.  Payloads that are not valid
    JSON are masked as text all the same; payloads over the budget keep their masked head.
    """
    limit = masker.config.budget.max_chars
    prepared: list[bytes | None] = []
    for value in raw.to_list():
        if value is not None and len(value) > limit:
            value = _utf8_head(value, limit)
        if value is not None and value[:2] == AVRO_MAGIC:
            record = parse_payload(value)
            if record is not None:
                value = orjson.dumps(record, default=str, option=orjson.OPT_NAIVE_UTC)
        if value is not None and b'"user_id"' in value:
            value = _USER_ID_JSON.sub(lambda m: m.group(1) + _user_token(masker, m.group(2)) + m.group(3), value)
        prepared.append(value)
    return masker.mask_payloads(pl.Series(raw.name, prepared, dtype=pl.Binary))


def mask_dead_letters(frame: pl.DataFrame, masker: PiiMasker) -> pl.DataFrame:
    """Refused rows with their payload (``raw``) and Kafka key (``src_key``) masked, for the
    dead-letter topic when ``privacy.mask_dead_letter`` is on."""
    cols = [mask_dead_letter_payloads(frame["raw"], masker).alias("raw")]
    if "src_key" in frame.columns:
        cols.append(masker.mask_payloads(frame["src_key"]).alias("src_key"))
    return frame.with_columns(cols)


def _utf8_head(value: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes of ``value``, without a UTF-8 sequence cut in half."""
    head = value[:limit]
    i = len(head)
    while i > 0 and i > len(head) - 4 and (head[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i > 0 and head[i - 1] >= 0xC0:
        i -= 1
    return head[:i] if i < len(head) else head


def _user_token(masker: PiiMasker, escaped: bytes) -> bytes:
    try:
        value = orjson.loads(b'"' + escaped + b'"')
    except orjson.JSONDecodeError:
        value = escaped.decode("utf-8", "replace")
    return masker.pseudonymize_values(pl.Series([value], dtype=pl.Utf8))[0].encode()


__all__ = [
    "BUDGET_REASONS",
    "IDENTIFIERS",
    "STAGE",
    "audit_frame",
    "audit_schema",
    "classify",
    "entities_for",
    "entity_column",
    "mask_batch",
    "mask_batch_audited",
    "mask_dead_letter_payloads",
    "mask_dead_letters",
    "pii_output_schema",
]
