"""The PII masker: finds entities across a whole batch of texts and masks them.

How a batch is scanned:

1. one Polars ``select`` runs every recognizer's pattern (and every DLP rule) with
   ``str.contains`` over the whole column in Rust, in parallel: a boolean per row and pattern;
2. only rows flagged for a recognizer are searched again with Python's :mod:`re` to get the
   spans, and each candidate goes through the recognizer's validator (checksum, layout,
   boundary and context rules);
3. overlapping spans are resolved per row (higher priority, then longer, then earlier);
4. the rows with findings are rebuilt with each span replaced by its strategy's output;
   rows without findings are left as they are.

>>> m = PiiMasker.from_config(PrivacyConfig(), key=b"0123456789abcdef0123")
>>> m.mask_series(pl.Series(["mail a.b@example.com, card 4111-1111-1111-1111"])).to_list()  # doctest: +ELLIPSIS
['mail <EMAIL:...>, card <CREDIT_CARD:...>']
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from driftline.config import ConfigError
from driftline.config.privacy import BUILTIN_ENTITIES, CustomRecognizer, DlpRule, PrivacyConfig
from driftline.operators.pii.masking import STRATEGIES, MaskContext
from driftline.operators.pii.recognizers import RECOGNIZERS, Recognizer, RecognizerOptions

#: Entity types every output schema carries (one ``pii_<type>`` count column each).

FINDING_DTYPE = pl.Struct({"type": pl.Utf8, "recognizer": pl.Utf8, "start": pl.Int32, "end": pl.Int32})
_DLP_PRIORITY = 30
_PERSON_PRIORITY = 20


class _ConfiguredPattern(Recognizer):
    """A recognizer built from ``privacy.custom_recognizers`` or a DLP ``mask`` rule."""

    def __init__(self, name: str, entity: str, pattern: str, priority: int) -> None:
        super().__init__(None)
        self._name, self._entity, self._pattern, self._priority = name, entity, pattern, priority

    @property  # type: ignore[override]
    def name(self) -> str:
        return self._name

    @property  # type: ignore[override]
    def entity(self) -> str:
        return self._entity

    @property  # type: ignore[override]
    def pattern(self) -> str:
        return self._pattern

    @property  # type: ignore[override]
    def priority(self) -> int:
        return self._priority


class SpacyPersonDetector:
    """PERSON names from a spaCy NER pipeline, loaded once at start-up."""

    def __init__(self, model: str, labels: Sequence[str]) -> None:
        try:
            import spacy
        except ImportError:  # pragma: no cover - spacy is a bench/optional dependency
            raise ConfigError("privacy.person.enabled: spaCy is not installed (pip install spacy and a model)") from None
        try:
            self._nlp = spacy.load(model)
        except OSError as exc:
            raise ConfigError(f"privacy.person.model: cannot load spaCy pipeline {model!r}: {exc}") from None
        if "ner" not in self._nlp.pipe_names and "entity_ruler" not in self._nlp.pipe_names:
            raise ConfigError(f"privacy.person.model: spaCy pipeline {model!r} has no ner or entity_ruler component")
        self._labels = frozenset(labels)

    def spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [[(e.start_char, e.end_char) for e in doc.ents if e.label_ in self._labels] for doc in self._nlp.pipe(texts)]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What :meth:`PiiMasker.scan` found in a column of texts (row order kept).

    ``masked``: the masked texts; ``counts``: entity type -> Int32 count per row;
    ``findings``: per row a list of ``{type, recognizer, start, end}`` (offsets in code
    points of the ORIGINAL text; never the values); ``rules``: DLP rule name -> whether it
    fired on the row (evaluated on the original text).
    """

    masked: pl.Series
    counts: dict[str, np.ndarray]
    findings: pl.Series
    rules: dict[str, pl.Series]


class PiiMasker:
    """Detects and masks PII; built once at start-up with :meth:`from_config` (immutable after)."""

    def __init__(
        self,
        recognizers: Sequence[Recognizer],
        *,
        ctx: MaskContext,
        strategies: Mapping[str, str],
        default_strategy: str = "pseudonymize",
        rules: Sequence[DlpRule] = (),
        entities: Sequence[str] = BUILTIN_ENTITIES,
        person: SpacyPersonDetector | None = None,
        config: PrivacyConfig | None = None,
    ) -> None:
        mask_rules = [r for r in rules if r.action == "mask"]
        scanners: list[Recognizer] = list(recognizers)
        scanners += [_ConfiguredPattern(f"dlp:{r.name}", "DLP", r.regex(), _DLP_PRIORITY) for r in mask_rules]
        self._scanners: tuple[Recognizer, ...] = tuple(scanners)
        self._compiled: tuple[re.Pattern[str], ...] = tuple(re.compile(s.pattern) for s in scanners)
        self._by_name: dict[str, Recognizer] = {s.name: s for s in scanners}
        self.ctx = ctx
        self._strategies = dict(strategies)
        self._default_strategy = default_strategy
        self.rules: tuple[DlpRule, ...] = tuple(rules)
        self.entities: tuple[str, ...] = tuple(entities)
        self._person = person
        #: The ``privacy`` section this masker was built from (classification, user_id and attribute settings).
        self.config: PrivacyConfig = config or PrivacyConfig()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, cfg: PrivacyConfig, key: bytes) -> PiiMasker:
        """Build the masker from the ``privacy`` section; raises :class:`ConfigError` naming the bad key."""
        unknown = [n for n in cfg.disabled_recognizers if n not in RECOGNIZERS]
        if unknown:
            raise ConfigError(f"privacy.disabled_recognizers: unknown recognizer(s) {unknown}; known: {sorted(RECOGNIZERS)}")
        options = RecognizerOptions(phone_regions=tuple(cfg.phone_regions), phone_reject_context=tuple(cfg.phone_reject_context))
        recs: list[Recognizer] = [c(options) for n, c in RECOGNIZERS.items() if n not in cfg.disabled_recognizers]
        custom_entities: list[str] = []
        for i, c in enumerate(cfg.custom_recognizers):
            if c.name in RECOGNIZERS or any(r.name == c.name for r in recs):
                raise ConfigError(f"privacy.custom_recognizers[{i}].name: {c.name!r} is already a recognizer")
            recs.append(_custom(c))
            if c.entity not in BUILTIN_ENTITIES and c.entity not in custom_entities:
                custom_entities.append(c.entity)
        entities = BUILTIN_ENTITIES + tuple(sorted(custom_entities))
        for entity in list(cfg.strategies) + list(cfg.entity_levels):
            if entity not in entities and entity != "USER_ID":
                raise ConfigError(f"privacy: entity type {entity!r} (in strategies or entity_levels) is not produced by any recognizer; known: {list(entities)}")
        person = SpacyPersonDetector(cfg.person.model, cfg.person.labels) if cfg.person.enabled else None
        ctx = MaskContext(key=key, token_hex_chars=cfg.token_hex_chars, partial_keep=cfg.partial_keep)
        strategies = {e: cfg.strategy_for(e) for e in entities}
        return cls(recs, ctx=ctx, strategies=strategies, default_strategy=cfg.default_strategy, rules=cfg.dlp_rules, entities=entities, person=person, config=cfg)

    # ------------------------------------------------------------------ public API

    def strategy_for(self, entity: str) -> str:
        return self._strategies.get(entity, self._default_strategy)

    def scan(self, texts: pl.Series) -> ScanResult:
        """Find, resolve and mask entities in ``texts`` (nulls stay null) and evaluate the DLP rules."""
        texts = texts.cast(pl.Utf8)
        n = texts.len()
        frame = pl.DataFrame({"t": texts})
        exprs = [pl.col("t").str.contains(s.candidate_pattern).fill_null(False).alias(f"s{i}") for i, s in enumerate(self._scanners)]
        exprs += [pl.col("t").str.contains(r.regex()).fill_null(False).alias(f"r{j}") for j, r in enumerate(self.rules)]
        hits = frame.select(exprs) if exprs else pl.DataFrame()
        rules = {r.name: hits[f"r{j}"].rename(r.name) for j, r in enumerate(self.rules)}

        scanner_cols = [f"s{i}" for i in range(len(self._scanners))]
        if self._person is not None:
            cand = texts.is_not_null() & (texts.str.len_chars() > 0)
        elif scanner_cols:
            cand = hits.select(pl.any_horizontal(scanner_cols)).to_series()
        else:
            cand = pl.Series([False] * n)
        rows = cand.arg_true()
        spans: dict[int, list[tuple[int, int, int, str, str]]] = {}
        if rows.len():
            row_list = rows.to_list()
            local = {r: k for k, r in enumerate(row_list)}
            tlist: list[str] = texts.gather(rows).to_list()
            for i, scanner in enumerate(self._scanners):
                if not scanner_cols:
                    break
                col_rows = hits[f"s{i}"].arg_true().to_list()
                compiled = self._compiled[i]
                prio, entity, rname = scanner.priority, scanner.entity, scanner.name
                for r in col_rows:
                    text = tlist[local[r]]
                    accepted, shadows = scanner.scan(text, compiled.finditer(text))
                    if accepted or shadows:
                        bucket = spans.setdefault(r, [])
                        bucket.extend((s, e, prio, entity, rname) for s, e in accepted)
                        bucket.extend((s, e, prio, "", rname) for s, e in shadows)
            if self._person is not None:
                for r, found in zip(row_list, self._person.spans(tlist)):
                    for s, e in found:
                        spans.setdefault(r, []).append((s, e, _PERSON_PRIORITY, "PERSON", "spacy_person"))

        counts = {e: np.zeros(n, dtype=np.int32) for e in self.entities}
        f_row: list[int] = []
        f_type: list[str] = []
        f_rec: list[str] = []
        f_start: list[int] = []
        f_end: list[int] = []
        new_rows: list[int] = []
        new_texts: list[str] = []
        if spans:
            texts_by_row = dict(zip(rows.to_list(), tlist))
            for r in sorted(spans):
                chosen = _resolve(spans[r])
                text = texts_by_row[r]
                pieces: list[str] = []
                pos = 0
                for s, e, _p, entity, rname in chosen:
                    if not entity:  # shadow of a rejected look-alike: nothing to mask
                        continue
                    pieces.append(text[pos:s])
                    pieces.append(self._replacement(entity, rname, text[s:e]))
                    pos = e
                    f_row.append(r)
                    f_type.append(entity)
                    f_rec.append(rname)
                    f_start.append(s)
                    f_end.append(e)
                    arr = counts.get(entity)
                    if arr is not None:
                        arr[r] += 1
                if pos:
                    pieces.append(text[pos:])
                    new_rows.append(r)
                    new_texts.append("".join(pieces))
        masked = texts.clone()
        if new_rows:
            masked = masked.scatter(new_rows, pl.Series(new_texts, dtype=pl.Utf8))
        findings = _findings_series(n, f_row, f_type, f_rec, f_start, f_end)
        return ScanResult(masked=masked.rename(texts.name), counts=counts, findings=findings, rules=rules)

    def mask_series(self, texts: pl.Series) -> pl.Series:
        """Masked copy of a text column (the monitor flow masks prompts and completions with it)."""
        return self.scan(texts).masked

    def pseudonymize_values(self, values: pl.Series, entity: str = "USER_ID") -> pl.Series:
        """``<ENTITY:token>`` for each non-null value (same key and scheme as text tokens)."""
        values = values.cast(pl.Utf8)
        uniq = values.drop_nulls().unique()
        if uniq.len() == 0:
            return values
        mapping = {u: f"<{entity}:{self.ctx.token(entity, u)}>" for u in uniq.to_list()}
        return values.replace_strict(mapping, default=None, return_dtype=pl.Utf8).rename(values.name)

    def mask_payloads(self, raw: pl.Series) -> pl.Series:
        """Masked copy of raw payload bytes (dead-letter masking).  UTF-8 payloads are masked as
        text; other bytes are read one byte per character (Latin-1), so ASCII PII inside
        binary data is still masked and every other byte is kept.  JSON stays valid JSON
        (tokens hold no quote or backslash); masked Avro payloads are no longer decodable."""
        decoded: list[str | None] = []
        latin: list[bool] = []
        for b in raw.to_list():
            if b is None:
                decoded.append(None)
                latin.append(False)
                continue
            try:
                decoded.append(b.decode("utf-8"))
                latin.append(False)
            except UnicodeDecodeError:
                decoded.append(b.decode("latin-1"))
                latin.append(True)
        masked = self.mask_series(pl.Series(decoded, dtype=pl.Utf8)).to_list()
        out = [None if t is None else t.encode("latin-1" if lat else "utf-8") for t, lat in zip(masked, latin)]
        return pl.Series(raw.name, out, dtype=pl.Binary)

    # ------------------------------------------------------------------ internals

    def _replacement(self, entity: str, recognizer: str, value: str) -> str:
        if entity == "DLP":
            return f"<DLP:{recognizer[4:]}>"
        rec = self._by_name.get(recognizer)
        normalized = rec.normalize(value) if rec is not None else value
        return STRATEGIES[self.strategy_for(entity)](entity, value, normalized, self.ctx)


def _custom(c: CustomRecognizer) -> Recognizer:
    return _ConfiguredPattern(c.name, c.entity, c.pattern, c.priority)


def _resolve(cands: list[tuple[int, int, int, str, str]]) -> list[tuple[int, int, int, str, str]]:
    """Non-overlapping spans: higher priority first, then longer, then earlier; sorted by start."""
    if len(cands) == 1:
        return cands
    cands = sorted(set(cands), key=lambda c: (-c[2], c[0] - c[1], c[0]))
    chosen: list[tuple[int, int, int, str, str]] = []
    for c in cands:
        if all(c[1] <= o[0] or c[0] >= o[1] for o in chosen):
            chosen.append(c)
    chosen.sort()
    return chosen


def _findings_series(n: int, rows: list[int], types: list[str], recs: list[str], starts: list[int], ends: list[int]) -> pl.Series:
    dtype = pl.List(FINDING_DTYPE)
    if not rows:
        return pl.Series("pii_findings", [[]] * n, dtype=dtype) if n else pl.Series("pii_findings", [], dtype=dtype)
    flat = pl.DataFrame(
        {"row": rows, "type": types, "recognizer": recs, "start": starts, "end": ends},
        schema={"row": pl.UInt32, "type": pl.Utf8, "recognizer": pl.Utf8, "start": pl.Int32, "end": pl.Int32},
    )
    grouped = flat.group_by("row", maintain_order=True).agg(pl.struct("type", "recognizer", "start", "end").alias("pii_findings"))
    full = pl.DataFrame({"row": pl.arange(0, n, dtype=pl.UInt32, eager=True)}).join(grouped, on="row", how="left", maintain_order="left")
    return full["pii_findings"].fill_null(pl.lit([], dtype=dtype)).cast(dtype)


__all__ = ["BUILTIN_ENTITIES", "FINDING_DTYPE", "PiiMasker", "ScanResult", "SpacyPersonDetector"]
