"""The PII masker: finds entities across a whole batch of strings and masks them.

How a batch is scanned (every step is linear in the size of the batch):

0. **distinct strings**: a string's results depend on it alone, so each distinct string is
   scanned once (Arrow ``dictionary_encode``) and its results copied to its repeats;
1. **budget, up front**: strings longer than ``privacy.budget.max_chars`` are cut to that
   length before anything else (``ScanResult.cut``);
2. **view**: strings that need it (one Rust regex, :func:`~.normalize.needs_view_regex`)
   get a normalised detection view with an offset map (:mod:`.normalize`); Base64 runs
   that decode to text are added as extra strings, scanned like the rest;
3. **candidates**: one regex, the alternation of every first test (needs a view, Base64,
   each regex prefilter, the literal ones), reads every string once; only the strings it
   matches (most do not) get the separate tests, in one Polars query whose expressions run
   in parallel without the GIL (a prefilter declared within another's,
   ``prefilter_within``, reads only the strings that one flags); the DLP rules run
   alongside.  For the flagged rows only, Polars' Rust regex finds each recognizer's
   matches, all recognizers in one parallel call (each match wrapped in markers by one
   ``replace_all``, then ``split``: spans without a backtracking engine);
4. **validation**: each candidate goes through its recognizer's ``accept`` (checksum,
   layout, boundary and context rules) in Python.  A string with more candidates than
   ``privacy.budget.max_candidates`` (counted with numpy before any is validated), or one a
   recognizer finds too costly (:class:`~.recognizers.BudgetExceeded`), is not scanned
   further (``ScanResult.over_budget``: the caller refuses its record).  Every ``accept``
   does work bounded by its candidate's length, so a string costs at most
   O(recognizers x length).  The budget is counted in work, not measured in time, so a
   record is refused the same way when it is replayed after a crash (the datasets are
   exactly-once by source coordinates);
5. **overlaps**: per row, candidates sorted by priority, then length, then position; a
   candidate is kept when none of its characters is already taken (a byte map: linear);
6. **masking**: view spans map back to spans of the original string; each becomes its
   strategy's replacement, computed from the normalised value (so a disguised e-mail gets
   the same token as the plain one); findings become a ``List(Struct)`` column built from
   flat arrays (Arrow offsets), counts come from ``numpy.bincount``.

>>> m = PiiMasker.from_config(PrivacyConfig(), key=b"0123456789abcdef0123")
>>> m.mask_series(pl.Series(["mail a.b@example.com, card 4111-1111-1111-1111"])).to_list()  # doctest: +ELLIPSIS
['mail <EMAIL:...>, card <CREDIT_CARD:...>']
>>> m.mask_series(pl.Series(["mail a.b&#64;example.com"]))[0] == m.mask_series(pl.Series(["mail a.b@example.com"]))[0]
True
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from driftline.config import ConfigError
from driftline.config.privacy import CustomRecognizer, DlpRule, PrivacyConfig, entity_names
from driftline.operators.pii.masking import STRATEGIES, MaskContext
from driftline.operators.pii.normalize import View, build_view, needs_view_regex
from driftline.operators.pii.recognizers import RECOGNIZERS, BudgetExceeded, Recognizer, RecognizerOptions, literal_alternation
from driftline.operators.pii.spans import regex_spans, regex_spans_many
from driftline.operators.batch import ENGINE, owned_array

FINDING_DTYPE = pl.Struct({"type": pl.Utf8, "recognizer": pl.Utf8, "start": pl.Int32, "end": pl.Int32})
_FINDING_ARROW = pa.struct([("type", pa.large_string()), ("recognizer", pa.large_string()), ("start", pa.int32()), ("end", pa.int32())])
_DLP_PRIORITY = 30
_PERSON_PRIORITY = 20
#: Base64 (standard or URL-safe) runs long enough to hide an e-mail address or a number.
#: A run of Base64 characters with a lower-case letter somewhere before an upper-case one, as
#: Base64 of text of any length almost always has (capitalised words such as
#: "Kaffeevollautomat", numbers and lower-case identifiers do not).
_B64_RUN = r"[A-Za-z0-9+/_\-]*[a-z][A-Za-z0-9+/_\-]*[A-Z][A-Za-z0-9+/_\-]*={0,2}"
_B64_MIN = 12
#: Strings that cannot hold any entity: shorter than six characters, one lower-case word
#: (``support-desk``, ``lang_hint``), or a UUID.
_TRIVIAL = r"(?s)^(?:.{0,5}|[a-z_]+(?:-[a-z_]+){0,3}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
#: A cut string ends with this marker (the head is cut to leave room for it, before masking).
CUT_MARKER = " [cut]"

Candidate = tuple[int, int, int, str, str, str | None]  # start, end, priority, entity ('' = shadow), recognizer, value for the token


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
    """What :meth:`PiiMasker.scan` found in a column of strings (row order kept).

    ``masked``: the masked strings (null where the input was null, or where the row was
    over budget: see ``over_budget``); ``counts``: entity type -> Int32 count per row;
    ``findings``: per row a list of ``{type, recognizer, start, end}`` (offsets in code
    points of the ORIGINAL string; never the values); ``rules``: DLP rule name -> whether
    it fired on the row (evaluated on the view); ``cut``: the string was longer than
    ``budget.max_chars`` and only its masked head is in ``masked``; ``over_budget``: the row
    has more candidates than ``budget.max_candidates`` (or one too costly to check), so it
    was not fully scanned.
    """

    masked: pl.Series
    counts: dict[str, np.ndarray]
    findings: pl.Series
    rules: dict[str, pl.Series]
    cut: np.ndarray
    over_budget: np.ndarray

    def slice(self, start: int, length: int) -> ScanResult:
        """The result for strings ``[start, start + length)`` only."""
        end = start + length
        return ScanResult(
            masked=self.masked.slice(start, length),
            counts={e: c[start:end] for e, c in self.counts.items()},
            findings=self.findings.slice(start, length),
            rules={k: v.slice(start, length) for k, v in self.rules.items()},
            cut=self.cut[start:end],
            over_budget=self.over_budget[start:end],
        )

    @property
    def total(self) -> np.ndarray:
        """Findings per row, all types together."""
        n = self.cut.shape[0]
        return np.sum([c for c in self.counts.values()], axis=0, dtype=np.int32) if self.counts else np.zeros(n, np.int32)


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
        entities: Sequence[str] | None = None,
        person: SpacyPersonDetector | None = None,
        config: PrivacyConfig | None = None,
    ) -> None:
        mask_rules = [r for r in rules if r.action == "mask"]
        scanners: list[Recognizer] = list(recognizers)
        scanners += [_ConfiguredPattern(f"dlp:{r.name}", "DLP", r.regex(), _DLP_PRIORITY) for r in mask_rules]
        self._scanners: tuple[Recognizer, ...] = tuple(scanners)
        self._by_priority = sorted(range(len(scanners)), key=lambda i: -scanners[i].priority)
        self._by_name: dict[str, Recognizer] = {s.name: s for s in scanners}
        self.ctx = ctx
        self._strategies = dict(strategies)
        self._default_strategy = default_strategy
        self.rules: tuple[DlpRule, ...] = tuple(rules)
        self.entities: tuple[str, ...] = tuple(entities) if entities is not None else entity_names()
        self._person = person
        #: The ``privacy`` section this masker was built from (classification, user_id, attribute and budget settings).
        self.config: PrivacyConfig = config or PrivacyConfig()
        self._max_chars = self.config.budget.max_chars
        self._max_candidates = self.config.budget.max_candidates
        self._needs_view = needs_view_regex()
        #: scanner -> the scanner whose regex prefilter flags every row its own prefilter flags
        #: (:attr:`Recognizer.prefilter_within`, when both are present and neither is literal).
        self._gates: dict[int, int] = _prefilter_gates(self._scanners)
        self._literals: list[str] = [w for s in self._scanners for w in s.prefilter_literals]
        #: A regex matching wherever one of the first tests (needs a view, Base64, a regex
        #: prefilter, a literal one) would: their alternation (a scanner under a gate is
        #: covered by its gate's prefilter).  Strings it does not match skip every other test.
        tests = [self._needs_view, _B64_RUN, *(s.candidate_pattern for i, s in enumerate(self._scanners) if not s.prefilter_literals and i not in self._gates)]
        if self._literals:
            tests.append(literal_alternation(self._literals))
        self._any_test: str | None = _compiles("|".join(f"(?:{p})" for p in tests))
        # Tokens of values seen before (user ids, repeated e-mails) are not recomputed.
        self._token = functools.lru_cache(maxsize=1 << 16)(self._make_token)
        #: entity -> value -> ``<ENTITY:token>`` of :meth:`pseudonymize_values` (user ids recur batch after batch).
        self._pseudonyms: dict[str, dict[str, str]] = {}
        # The Polars expressions of the tests, built once: building them for every batch
        # cost as much as running some of them.
        t = pl.col("t")
        any_test = t.str.contains(self._any_test).fill_null(False) if self._any_test is not None else t.is_not_null()
        self._x_work = [pl.col("row"), any_test.alias("any")]
        self._x_trivial = t.str.contains(_TRIVIAL).fill_null(True)
        self._x_rules = [t.str.contains(r.regex()).fill_null(False).alias(f"r{j}") for j, r in enumerate(self.rules)]
        self._x_before = [*self._gate_exprs(t), *([_any_literal(t, self._literals).alias("lit")] if self._literals else [])]
        self._x_prefilters = [*self._regex_prefilters(t), *self._literal_prefilters(t)]
        self._x_first = [t.str.contains(self._needs_view).fill_null(False).alias("view"), t.str.contains(_B64_RUN).fill_null(False).alias("b64"), *self._x_prefilters]
        self._x_view_rules = self._rule_exprs(t, pl.col("ruled"))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, cfg: PrivacyConfig, key: bytes) -> PiiMasker:
        """Build the masker from the ``privacy`` section; raises :class:`ConfigError` naming the bad key."""
        unknown = [n for n in cfg.disabled_recognizers if n not in RECOGNIZERS]
        if unknown:
            raise ConfigError(f"privacy.disabled_recognizers: unknown recognizer(s) {unknown}; known: {sorted(RECOGNIZERS)}")
        options = RecognizerOptions(phone_regions=tuple(cfg.phone_regions), phone_reject_context=tuple(cfg.phone_reject_context))
        recs: list[Recognizer] = [c(options) for n, c in RECOGNIZERS.items() if n not in cfg.disabled_recognizers]
        for r in recs:
            r.warm_up()
        builtin = entity_names()
        custom_entities: list[str] = []
        for i, c in enumerate(cfg.custom_recognizers):
            if c.name in RECOGNIZERS or any(r.name == c.name for r in recs):
                raise ConfigError(f"privacy.custom_recognizers[{i}].name: {c.name!r} is already a recognizer")
            recs.append(_custom(c))
            if c.entity not in builtin and c.entity not in custom_entities:
                custom_entities.append(c.entity)
        entities = builtin + tuple(sorted(custom_entities))
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

    def scan(self, texts: pl.Series, *, rule_rows: int | None = None) -> ScanResult:
        """Find, resolve and mask entities in ``texts`` (nulls stay null) and evaluate the DLP
        rules on the first ``rule_rows`` strings (default: all; other rows read False).

        Every result of a string depends on that string alone, so each distinct string is
        scanned once and its result copied to its repeats: a batch repeats most of its
        identifiers and attribute values, and often its texts."""
        texts = texts.cast(pl.Utf8)
        n = texts.len()
        k = n if rule_rows is None else min(n, rule_rows)
        distinct, index = _distinct(texts)
        if index is None:
            return self._scan_distinct(texts, np.arange(n) < k)
        ruled = np.zeros(distinct.len(), dtype=bool)
        ruled[index[:k]] = True
        found = self._scan_distinct(distinct, ruled)
        first_k = np.arange(n) < k
        take = pl.Series(index)
        return ScanResult(
            masked=found.masked.gather(take).rename(texts.name),
            counts={e: c[index] for e, c in found.counts.items()},
            findings=found.findings.gather(take),
            rules={name: pl.Series(name, flags.to_numpy()[index] & first_k) for name, flags in found.rules.items()},
            cut=found.cut[index],
            over_budget=found.over_budget[index],
        )

    def _scan_distinct(self, texts: pl.Series, ruled: np.ndarray) -> ScanResult:
        """:meth:`scan` of ``texts`` (Utf8), the DLP rules evaluated where ``ruled`` is set."""
        n = texts.len()
        lengths = texts.str.len_chars().fill_null(0).to_numpy()
        cut = lengths > self._max_chars
        head = self._max_chars - len(CUT_MARKER)
        scanned = texts.str.slice(0, head).zip_with(pl.Series(cut), texts) if cut.any() else texts
        # One parallel Polars query reads every string once for all the batch-wide tests:
        # strings no recognizer can match (short ones, lower-case words, UUIDs), strings that
        # need a view, Base64 runs, every regex prefilter, the union of the literal ones and
        # the DLP rules.  Strings whose view differs (few) are tested again on their view.
        # Everything below works on the m strings that are not trivial ("work"), indexed 0..m-1.
        first, rule_flags = self._first_flags(scanned, ruled)
        act = first["row"]
        m = len(act)
        work = scanned.gather(act)

        views, maps, over_views, changed = self._views(work, first["view"])
        again = np.zeros(m, dtype=bool)
        again[changed] = True
        b64_rows = np.flatnonzero((first["b64"] & ~again) | again)
        extra, parents = self._base64_segments(views, b64_rows)
        all_views = pl.concat([views, pl.Series(extra, dtype=pl.Utf8)]) if extra else views
        total = all_views.len()

        hits, view_rules = self._view_flags(all_views, first, again, ruled, act)
        rules: dict[str, pl.Series] = {}
        for j, r in enumerate(self.rules):
            flags = np.zeros(n, dtype=bool)
            flags[np.flatnonzero(ruled)] = rule_flags[f"r{j}"].to_numpy()
            if view_rules is not None:
                flags[act[changed]] = view_rules[j]
            rules[r.name] = pl.Series(r.name, flags)

        cands: dict[int, list[Candidate]] = {}
        py_views: dict[int, str] = {}  # rows already read into Python, shared by the scanners
        slow = np.zeros(total, dtype=bool)
        slow[over_views] = True
        n_cands = np.zeros(total, dtype=np.int64)
        located = self._locate_regex(all_views, hits, slow)
        # Higher priorities first, so a candidate inside an accepted span needs no validation.
        for i in self._by_priority:
            scanner = self._scanners[i]
            rows = hits.get(i)
            if rows is None or not len(rows):
                continue
            if i in located:
                r_arr, s_arr, e_arr = located[i]
                if slow.any():  # rows found too costly by a scanner before this one
                    keep = ~slow[r_arr]
                    r_arr, s_arr, e_arr = r_arr[keep], s_arr[keep], e_arr[keep]
            else:
                rows = rows[~slow[rows]]
                if not len(rows):
                    continue
                r_arr, s_arr, e_arr = scanner.locate(all_views.gather(rows), rows, self._max_candidates)
            if not len(r_arr):
                continue
            # A row with more candidates than the budget allows is not validated at all.
            n_cands += np.bincount(r_arr, minlength=total)
            crowded = n_cands > self._max_candidates
            if crowded.any():
                slow |= crowded
                keep = ~slow[r_arr]
                r_arr, s_arr, e_arr = r_arr[keep], s_arr[keep], e_arr[keep]
            self._validate(scanner, _python_strings(py_views, all_views, r_arr), r_arr, s_arr, e_arr, cands, slow)
        if self._person is not None:
            self._ner(views, m, cands)
        slow_work = slow[:m].copy()
        for j, (parent, _s, _e) in enumerate(parents):
            if slow[m + j]:
                slow_work[parent] = True
        self._lift_base64(extra, parents, cands, m)
        slow_rows = np.zeros(n, dtype=bool)
        slow_rows[act[slow_work]] = True

        counts = {e: np.zeros(n, dtype=np.int32) for e in self.entities}
        f_row: list[int] = []
        f_type: list[str] = []
        f_rec: list[str] = []
        f_start: list[int] = []
        f_end: list[int] = []
        new_rows: list[int] = []
        new_texts: list[str | None] = []
        rows_with = sorted(r for r in cands if r < m and not slow_work[r])
        originals = dict(zip(rows_with, work.gather(rows_with).to_list())) if rows_with else {}
        view_text = dict(zip(rows_with, views.gather(rows_with).to_list())) if rows_with else {}
        for r in rows_with:
            chosen = _resolve(cands[r])
            text = originals[r]
            view = maps.get(r)
            vtext = view_text[r]
            g = int(act[r])
            pieces: list[str] = []
            pos = 0
            for s, e, _p, entity, rname, value in chosen:
                if not entity:  # shadow of a rejected look-alike: nothing to mask
                    continue
                os_, oe = view.original_span(s, e) if view is not None else (s, e)
                if os_ < pos:  # two view spans from one original character: already masked
                    continue
                pieces.append(text[pos:os_])
                pieces.append(self._replacement(entity, rname, vtext[s:e] if value is None else value))
                pos = oe
                f_row.append(g)
                f_type.append(entity)
                f_rec.append(rname)
                f_start.append(os_)
                f_end.append(oe)
            if pos:
                pieces.append(text[pos:])
                new_rows.append(g)
                new_texts.append("".join(pieces))
        masked = scanned
        if cut.any():
            cut_rows = np.flatnonzero(cut).tolist()
            done = dict(zip(new_rows, new_texts))
            heads = scanned.gather(cut_rows).to_list()
            for r, h in zip(cut_rows, heads):
                done[r] = (done.get(r) or h) + CUT_MARKER
            new_rows, new_texts = list(done), list(done.values())
        if slow_rows.any():
            done = dict(zip(new_rows, new_texts))
            for r in np.flatnonzero(slow_rows).tolist():
                done[r] = None
            new_rows, new_texts = list(done), list(done.values())
        if new_rows:
            masked = masked.clone().scatter(new_rows, pl.Series(new_texts, dtype=pl.Utf8))  # scatter works in place
        rows_arr = np.asarray(f_row, dtype=np.int64)
        rows_of: dict[str, list[int]] = {}
        for g, e in zip(f_row, f_type):
            rows_of.setdefault(e, []).append(g)
        for e in counts:
            if e in rows_of:
                counts[e] = np.bincount(rows_of[e], minlength=n).astype(np.int32)
        findings = findings_column(n, rows_arr, f_type, f_rec, f_start, f_end)
        return ScanResult(masked=masked.rename(texts.name), counts=counts, findings=findings, rules=rules, cut=cut, over_budget=slow_rows)

    def mask_series(self, texts: pl.Series) -> pl.Series:
        """Masked copy of a text column (the monitor flow masks prompts and completions with it)."""
        return self.scan(texts).masked

    def pseudonymize_values(self, values: pl.Series, entity: str = "USER_ID") -> pl.Series:
        """``<ENTITY:token>`` for each non-null value (same key and scheme as text tokens)."""
        values = values.cast(pl.Utf8)
        if values.null_count() == values.len():
            return values
        encoded = pc.dictionary_encode(values.to_arrow())  # nulls stay null (null indices)
        known = self._pseudonyms.setdefault(entity, {})
        if len(known) > 1 << 16:  # bounded like the token cache
            known.clear()
        tokens = []
        for u in encoded.dictionary.to_pylist():
            token = known.get(u)
            if token is None:
                token = known[u] = self._token("pseudonymize", entity, u, u)
            tokens.append(token)
        return pl.Series(values.name, pc.take(pa.array(tokens, pa.large_string()), encoded.indices), dtype=pl.Utf8)

    def mask_payloads(self, raw: pl.Series) -> pl.Series:
        """Masked copy of raw payload bytes (dead-letter masking).  UTF-8 payloads are masked as
        text; other bytes are read one byte per character (Latin-1), so ASCII PII inside
        binary data is still masked and every other byte is kept.  JSON stays valid JSON
        (tokens hold no quote or backslash); masked Avro payloads are no longer decodable.
        Payloads longer than ``budget.max_chars`` keep only their masked head."""
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
        masked = self.scan(pl.Series(decoded, dtype=pl.Utf8)).masked.to_list()
        out = [None if b is None else ("<UNSCANNED>" if t is None else t).encode("latin-1" if lat else "utf-8", "replace") for b, t, lat in zip(raw.to_list(), masked, latin)]
        return pl.Series(raw.name, out, dtype=pl.Binary)

    # ------------------------------------------------------------------ internals

    def _regex_prefilters(self, t: pl.Expr) -> list[pl.Expr]:
        """``s{i}``: scanner i's regex prefilter (False on null).  A scanner whose prefilter
        lies within another's (:attr:`Recognizer.prefilter_within`) reads only the rows that
        one flags (the others read "", which costs next to nothing): its ``s{i}`` needs the
        ``g{k}`` columns of :meth:`_gate_exprs`."""
        out = []
        for i, s in enumerate(self._scanners):
            if s.prefilter_literals:
                continue
            if i in self._gates.values() and i not in self._gates:  # computed as g{i} already
                out.append(pl.col(f"g{i}").alias(f"s{i}"))
            elif i in self._gates:
                gate = pl.col(f"g{self._gates[i]}")
                out.append((s.candidate_expr(_only_where(gate, t)).fill_null(False) & gate).alias(f"s{i}"))
            else:
                out.append(s.candidate_expr(t).fill_null(False).alias(f"s{i}"))
        return out

    def _gate_exprs(self, t: pl.Expr) -> list[pl.Expr]:
        """``g{k}``: the prefilter of scanner k, which other scanners' prefilters lie within."""
        return [self._scanners[k].candidate_expr(t).fill_null(False).alias(f"g{k}") for k in sorted(set(self._gates.values()))]

    def _literal_prefilters(self, t: pl.Expr) -> list[pl.Expr]:
        """``s{i}``: scanner i's literal prefilter, read only where the union of all literal
        prefilters (column ``lit``) hit."""
        src = _only_where(pl.col("lit"), t)
        return [(_any_literal(src, s.prefilter_literals) & pl.col("lit")).alias(f"s{i}") for i, s in enumerate(self._scanners) if s.prefilter_literals]

    def _rule_exprs(self, t: pl.Expr, only: pl.Expr) -> list[pl.Expr]:
        """``r{j}``: DLP rule j fired, evaluated only where ``only`` holds."""
        src = _only_where(only, t)
        return [(src.str.contains(r.regex()).fill_null(False) & only).alias(f"r{j}") for j, r in enumerate(self.rules)]

    def _first_flags(self, strings: pl.Series, ruled: np.ndarray) -> tuple[dict[str, np.ndarray], pl.DataFrame]:
        """Per string that is not trivial (no recognizer can match it): ``row`` (its
        position), ``view`` (needs a detection view), ``b64`` (may hold a Base64 run),
        ``s{i}`` (scanner i's regex prefilter) and ``lit`` (one of the literal prefilters);
        and per ``ruled`` string ``r{j}`` (DLP rule j).  All read from the strings themselves.

        One regex, the alternation of all those tests (:attr:`_any_test`), runs first: most
        strings (and most long ones) match none of them, so every other test reads only the
        strings it flags.  Each query's expressions run in parallel without the GIL."""
        work = pl.LazyFrame({"t": strings}).with_row_index("row").filter(~self._x_trivial).select(self._x_work)
        queries = [work]
        if self.rules:
            queries.append(pl.LazyFrame({"t": strings.gather(np.flatnonzero(ruled))}).select(self._x_rules))
        found = pl.collect_all(queries, engine=ENGINE)
        rows = found[0]["row"].to_numpy().astype(np.int64)
        hit = found[0]["any"].to_numpy()
        first = {"row": rows}
        names = ["view", "b64", *(f"s{i}" for i in range(len(self._scanners)))]
        for name in names:
            first[name] = np.zeros(len(rows), dtype=bool)
        sel = np.flatnonzero(hit)
        if len(sel):
            flags = pl.LazyFrame({"t": strings.gather(rows[sel])})
            flags = (flags.with_columns(self._x_before) if self._x_before else flags).select(self._x_first).collect(engine=ENGINE)
            for name in names:
                first[name][sel] = flags[name].to_numpy()
        return first, (found[1] if self.rules else pl.DataFrame())

    def _view_flags(self, all_views: pl.Series, first: dict[str, np.ndarray], again: np.ndarray, ruled: np.ndarray, act: np.ndarray) -> tuple[dict[int, np.ndarray], list[np.ndarray] | None]:
        """Per scanner, the rows of ``all_views`` its prefilter flags, and the DLP rules of the
        ``again`` rows read on their views.  ``first`` (:meth:`_first_flags`, work rows)
        holds the answer for a string that is its own view; strings whose view differs
        (``again``) and decoded Base64 (rows from ``len(again)`` on) are tested here, in one
        query (null never matches)."""
        m = len(again)
        total = all_views.len()
        rows = np.concatenate([np.flatnonzero(again), np.arange(m, total)])
        view_ruled = np.zeros(len(rows), dtype=bool)
        n_again = int(again.sum())
        view_ruled[:n_again] = ruled[act[rows[:n_again]]]
        found = None
        if len(rows):
            exprs = self._x_prefilters + (self._x_view_rules if view_ruled.any() else [])
            frame = pl.LazyFrame({"t": all_views.gather(rows), "ruled": view_ruled})
            found = (frame.with_columns(self._x_before) if self._x_before else frame).select(exprs).collect(engine=ENGINE)
        hits: dict[int, np.ndarray] = {}
        keep = ~again
        for i in range(len(self._scanners)):
            flags = np.zeros(total, dtype=bool)
            flags[:m] = first[f"s{i}"] & keep
            if found is not None:
                flags[rows[found[f"s{i}"].to_numpy()]] = True
            hits[i] = np.flatnonzero(flags)
        view_rules = None
        if self.rules:
            if found is not None and view_ruled.any():
                view_rules = [found[f"r{j}"].to_numpy()[:n_again] for j in range(len(self.rules))]
            else:
                view_rules = [np.zeros(n_again, dtype=bool) for _ in self.rules]
        return hits, view_rules

    def _locate_regex(self, strings: pl.Series, hits: dict[int, np.ndarray], slow: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Candidate spans of every scanner that locates by its pattern alone (the default
        :meth:`Recognizer.locate`), over the rows its prefilter flagged (rows already over
        budget left out): one Polars query for all of them, so the patterns run in parallel
        without the GIL and the per-call cost is paid once.  Scanners with their own
        ``locate`` (cue searches, budgets) are not in it."""
        jobs: dict[int, np.ndarray] = {}
        for i, rows in hits.items():
            if len(rows) and type(self._scanners[i]).locate is Recognizer.locate:
                jobs[i] = rows[~slow[rows]]
        found = regex_spans_many(strings, [(rows, self._scanners[i].pattern) for i, rows in jobs.items()])
        return dict(zip(jobs, found))

    def _views(self, scanned: pl.Series, needs: np.ndarray) -> tuple[pl.Series, dict[int, View], list[int], np.ndarray]:
        """Detection views of the rows flagged by ``needs``, their offset maps, the rows over
        budget while building them, and the rows whose view differs from the string (those
        with a map, and those over budget, whose view is null)."""
        if not needs.any():
            return scanned, {}, [], np.zeros(0, dtype=np.int64)
        idx = np.flatnonzero(needs).tolist()
        maps: dict[int, View] = {}
        new: list[str | None] = []
        over: list[int] = []
        for r, t in zip(idx, scanned.gather(idx).to_list()):
            try:
                v = build_view(t, self._max_candidates)
            except BudgetExceeded:
                over.append(r)
                new.append(None)
                continue
            if v.starts is not None:
                maps[r] = v
            new.append(v.text)
        changed = np.asarray(sorted([*maps, *over]), dtype=np.int64)
        return scanned.clone().scatter(idx, pl.Series(new, dtype=pl.Utf8)), maps, over, changed  # scatter works in place

    @staticmethod
    def _base64_segments(views: pl.Series, idx: np.ndarray) -> tuple[list[str], list[tuple[int, int, int]]]:
        """Decoded text of Base64 runs (one level deep) in rows ``idx`` of ``views`` (every row
        that may hold one): ``(texts, [(row, start, end)])``."""
        # A row whose runs are all shorter than _B64_MIN ("iPhone") is flagged but yields
        # nothing below (a second regex ruling such rows out cost a pass over every row).
        if not len(idx):
            return [], []
        sub = views.gather(idx)
        r_arr, s_arr, e_arr = regex_spans(sub, idx, _B64_RUN)
        long_enough = (e_arr - s_arr) >= _B64_MIN
        if not long_enough.any():
            return [], []
        strings = dict(zip(idx.tolist(), sub.to_list()))
        texts: list[str] = []
        parents: list[tuple[int, int, int]] = []
        for r, s, e in zip(r_arr[long_enough].tolist(), s_arr[long_enough].tolist(), e_arr[long_enough].tolist()):
            decoded = _b64_text(strings[r][s:e])
            if decoded is not None:
                texts.append(decoded)
                parents.append((r, s, e))
        return texts, parents

    @staticmethod
    def _lift_base64(extra: list[str], parents: list[tuple[int, int, int]], cands: dict[int, list[Candidate]], n: int) -> None:
        """Findings inside decoded Base64 become findings of the whole Base64 run in the parent row."""
        for k, (r, s, e) in enumerate(parents):
            inner = cands.pop(n + k, None)
            if not inner:
                continue
            decoded = extra[k]
            for cs, ce, prio, entity, rname, value in _resolve(inner):
                if entity:
                    cands.setdefault(r, []).append((s, e, prio, entity, f"base64:{rname}", decoded[cs:ce] if value is None else value))

    def _validate(
        self,
        scanner: Recognizer,
        strings: dict[int, str],
        rows: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        cands: dict[int, list[Candidate]],
        slow: np.ndarray,
    ) -> None:
        prio, entity, rname = scanner.priority, scanner.entity, scanner.name
        for r, s, e in zip(rows.tolist(), starts.tolist(), ends.tolist()):
            if slow[r]:
                continue
            taken = cands.get(r)
            if taken and any(c[2] > prio and c[0] <= s and e <= c[1] for c in taken):
                continue  # inside a span a higher-priority recognizer already holds: it would lose anyway
            text = strings[r]
            try:
                accepted = list(scanner.accept(text, s, e))
            except BudgetExceeded:
                slow[r] = True
                continue
            if accepted:
                bucket = cands.setdefault(r, [])
                bucket.extend((a, b, prio, entity, rname, None) for a, b in accepted)
            else:
                sh = scanner.shadow(text, s, e)
                if sh is not None:
                    cands.setdefault(r, []).append((sh[0], sh[1], prio, "", rname, None))

    def _ner(self, views: pl.Series, n: int, cands: dict[int, list[Candidate]]) -> None:
        assert self._person is not None
        rows = (views.is_not_null() & (views.str.len_chars() > 0)).arg_true().to_list()
        if not rows:
            return
        for r, found in zip(rows, self._person.spans(views.gather(rows).to_list())):
            for s, e in found:
                cands.setdefault(r, []).append((s, e, _PERSON_PRIORITY, "PERSON", "spacy_person", None))

    def _replacement(self, entity: str, recognizer: str, value: str) -> str:
        if entity == "DLP":
            return f"<DLP:{recognizer[4:]}>"
        rec = self._by_name.get(recognizer.removeprefix("base64:"))
        normalized = rec.normalize(value) if rec is not None else value
        return self._token(self.strategy_for(entity), entity, value, normalized)

    def _make_token(self, strategy: str, entity: str, value: str, normalized: str) -> str:
        return STRATEGIES[strategy](entity, value, normalized, self.ctx)


def _only_where(flag: pl.Expr, t: pl.Expr) -> pl.Expr:
    """``t`` where ``flag`` holds, else "" (which a test reads at next to no cost): a test
    run on the rows another test flagged."""
    return pl.when(flag).then(t).otherwise(pl.lit(""))


def _compiles(pattern: str) -> str | None:
    """``pattern`` when Polars' regex engine accepts it, else None: an alternation of many
    large custom patterns may pass the engine's size limit (then every string that is not
    trivial gets every test, as without the alternation)."""
    try:
        pl.Series("t", [""], dtype=pl.Utf8).str.contains(pattern)
    except pl.exceptions.PolarsError:
        return None
    return pattern


def _prefilter_gates(scanners: Sequence[Recognizer]) -> dict[int, int]:
    """Scanner index -> index of the scanner named by its ``prefilter_within``."""
    by_name = {s.name: k for k, s in enumerate(scanners)}
    out: dict[int, int] = {}
    for i, s in enumerate(scanners):
        k = by_name.get(s.prefilter_within or "")
        if k is not None and k != i and not s.prefilter_literals and not scanners[k].prefilter_literals:
            out[i] = k
    return out


def _python_strings(cache: dict[int, str], strings: pl.Series, rows: np.ndarray) -> dict[int, str]:
    """``cache`` holding ``strings[r]`` for every row of ``rows``: only rows not read before are
    converted (several recognizers often look at the same long rows)."""
    missing = [r for r in dict.fromkeys(rows.tolist()) if r not in cache]
    if missing:
        cache.update(zip(missing, strings.gather(missing).to_list()))
    return cache


def _any_literal(col: pl.Expr, literals: Iterable[str]) -> pl.Expr:
    """True where ``col`` holds one of ``literals``, ASCII case-insensitively: the same test as
    the recognizers' :func:`~.recognizers.literal_alternation`, by Aho-Corasick, so no regex
    is compiled (Polars keeps 32 compiled regexes per thread; a batch's stages use more, so
    every regex is compiled again on every batch)."""
    return col.str.contains_any(sorted(set(literals)), ascii_case_insensitive=True).fill_null(False)


def _distinct(texts: pl.Series) -> tuple[pl.Series, np.ndarray | None]:
    """The distinct strings of ``texts`` (null is one of them) and, per row, the position of
    its string among them; None instead of positions when every row is distinct."""
    encoded = pc.dictionary_encode(texts.to_arrow(), null_encoding="encode")
    if len(encoded.dictionary) == texts.len():
        return texts, None
    return pl.Series(texts.name, encoded.dictionary, dtype=pl.Utf8), np.asarray(encoded.indices, dtype=np.int64)


def _custom(c: CustomRecognizer) -> Recognizer:
    return _ConfiguredPattern(c.name, c.entity, c.pattern, c.priority)


_HEXISH = re.compile(r"[0-9A-Fa-f\-]+")


def _b64_text(run: str) -> str | None:
    """``run`` decoded as Base64 (standard or URL-safe) when that gives printable UTF-8 text.
    Runs that cannot be Base64 of text are skipped before decoding: hex and UUIDs, and runs
    without both upper- and lower-case letters (Base64 of text always has both)."""
    body = run.rstrip("=")
    if len(body) % 4 == 1 or body.islower() or body.isupper() or _HEXISH.fullmatch(body):
        return None
    padded = body + "=" * (-len(body) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if len(text) < 6 or not text.isprintable():
        return None
    return text


def _resolve(cands: list[Candidate]) -> list[Candidate]:
    """Non-overlapping spans: higher priority first, then longer, then earlier; sorted by start.
    A byte map of taken characters keeps this linear in the candidates' total length."""
    if len(cands) == 1:
        return cands
    order = sorted(set(cands), key=lambda c: (-c[2], c[0] - c[1], c[0]))
    taken = bytearray(max(c[1] for c in order) + 1)
    chosen: list[Candidate] = []
    for c in order:
        s, e = c[0], c[1]
        if e <= s or taken.find(1, s, e) != -1:
            continue
        taken[s:e] = b"\x01" * (e - s)
        chosen.append(c)
    chosen.sort()
    return chosen


def findings_column(n: int, rows: np.ndarray, types: list[str], recs: list[str], starts: list[int], ends: list[int]) -> pl.Series:
    """``List(FINDING_DTYPE)`` of ``n`` rows from flat findings sorted by row (Arrow offsets)."""
    offsets = np.zeros(n + 1, dtype=np.int32)
    if len(rows):
        np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    values = pa.StructArray.from_arrays(
        [pa.array(types, pa.large_string()), pa.array(recs, pa.large_string()), pa.array(starts, pa.int32()), pa.array(ends, pa.int32())],
        fields=list(_FINDING_ARROW),
    )
    return pl.Series("pii_findings", pa.ListArray.from_arrays(owned_array(offsets, pa.int32()), values)).cast(pl.List(FINDING_DTYPE))


__all__ = ["CUT_MARKER", "FINDING_DTYPE", "PiiMasker", "ScanResult", "SpacyPersonDetector", "findings_column"]
