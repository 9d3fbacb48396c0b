"""PII recognizers: one small registered class per kind of value.

A recognizer declares a ``pattern`` and a ``prefilter``, both in the common subset of
Rust ``regex`` and Python :mod:`re` syntax (no look-around, no back-references).  Polars
runs the prefilter over the whole batch (Rust, linear time) to flag candidate rows, then
the pattern over the flagged rows only, to locate the matches (see
:func:`~driftline.operators.pii.spans.regex_spans`).  The prefilter must match every text
the pattern matches and is kept free of costly constructs such as Unicode ``\\b``; by
default it is the pattern itself.  ``accept`` then runs the recognizer's validator on
each candidate and returns the accepted ``(start, end)`` spans, which may be narrower than
the match (a ``password=`` value, the user-info of a URL).  Recognizers read the
detection view of the text (:mod:`~driftline.operators.pii.normalize`): invisible
characters removed, entities decoded, digits folded to ASCII.

A new entity is one registered class; its ``pii_<type>`` column, ``f_pii_<type>`` feature,
default classification ``level`` and default masking ``strategy`` follow from it::

    @register
    class EmployeeId(Recognizer):
        name = "employee_id"
        entity = "EMPLOYEE_ID"
        level = "restricted"           # default classification when found (default: confidential)
        strategy = "redact"            # default masking strategy (default: privacy.default_strategy)
        pattern = r"\\bEMP-\\d{6}\\b"

>>> rec = RECOGNIZERS["credit_card"](RecognizerOptions())
>>> text = "card 4111 1111 1111 1111, ref 4111 1111 1111 1112"
>>> [text[s:e] for s, e in rec.find(text)]
['4111 1111 1111 1111']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import phonenumbers
import polars as pl

from driftline.operators.pii import validators as v
from driftline.operators.pii.normalize import BudgetExceeded
from driftline.operators.pii.spans import regex_spans

Span = tuple[int, int]

RECOGNIZERS: dict[str, type[Recognizer]] = {}


_LEVELS = ("public", "internal", "confidential", "restricted")


def literal_alternation(literals: Iterable[str]) -> str:
    """A Rust regex matching any of ``literals``, ASCII case-insensitively (Polars' regex
    engine runs such an alternation as a literal search, faster than its Aho-Corasick
    ``contains_any`` on short strings)."""
    return "(?i-u:" + "|".join(re.escape(w) for w in sorted(set(literals), key=len, reverse=True)) + ")"


def register(cls: type[Recognizer]) -> type[Recognizer]:
    """Class decorator adding a recognizer to :data:`RECOGNIZERS` under ``cls.name``.

    The first recognizer of an entity declares it (``level``, ``strategy``); another
    recognizer of the same entity must agree with it."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", cls.name):
        raise ValueError(f"recognizer name {cls.name!r} must be lower_snake_case")
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", cls.entity):
        raise ValueError(f"recognizer {cls.name!r}: entity {cls.entity!r} must be UPPER_SNAKE_CASE")
    if cls.level not in _LEVELS:
        raise ValueError(f"recognizer {cls.name!r}: level {cls.level!r} must be one of {_LEVELS}")
    known = entity_defaults().get(cls.entity)
    if known is not None and known != (cls.level, cls.strategy):
        raise ValueError(f"recognizer {cls.name!r}: entity {cls.entity} is already declared with level/strategy {known}, not {(cls.level, cls.strategy)}")
    RECOGNIZERS[cls.name] = cls
    return cls


def entity_defaults() -> dict[str, tuple[str, str | None]]:
    """Entity type -> (default level, default strategy or None), in registration order."""
    out: dict[str, tuple[str, str | None]] = {}
    for cls in RECOGNIZERS.values():
        out.setdefault(cls.entity, (cls.level, cls.strategy))
    return out


@dataclass(frozen=True, slots=True)
class RecognizerOptions:
    """Settings recognizers read from ``privacy`` configuration (immutable)."""

    phone_regions: tuple[str, ...] = ()
    phone_reject_context: tuple[str, ...] = (
        "order", "invoice", "ticket", "tracking", "shipment", "parcel", "reference", "ref",
        "sku", "serial", "transaction", "case", "account", "iban", "card", "version", "build",
        "ordered", "date", "dated", "since", "until", "delivered", "shipped", "code", "voucher",
    )  # fmt: skip
    phone_accept_context: tuple[str, ...] = (
        "phone", "call", "tel", "telephone", "mobile", "cell", "reach", "whatsapp", "fax", "sms", "text", "dial",
        "telefon", "téléphone", "teléfono", "telefono", "telefoon", "telefone", "celular", "handy", "portable", "mobil", "móvil",
        "cellulare", "tél", "rufen", "ruf", "anrufen", "erreichen", "erreichbar", "rappelez", "appelez", "appeler", "joindre",
        "llámenme", "llámeme", "llamar", "llame", "richiamatemi", "richiamare", "chiamare", "chiamatemi", "liguem", "ligue",
        "ligar", "bel", "bellen",
    )  # fmt: skip
    card_accept_context: tuple[str, ...] = (
        "card", "visa", "mastercard", "amex", "maestro", "paid", "charged", "payment", "kreditkarte", "karte", "carte",
        "tarjeta", "carta", "cartão", "creditcard",
    )  # fmt: skip
    ip_reject_context: tuple[str, ...] = ("version", "v", "build", "release", "firmware", "versión", "versione", "versie")
    context_window: int = 2
    #: Words before a phone candidate that the phone and reject lists are looked up in.
    phone_context_window: int = 4
    extra: dict[str, str] = field(default_factory=dict)


class Recognizer:
    """Base class: a pattern, an optional validator and a priority for overlaps."""

    name: ClassVar[str] = ""
    entity: ClassVar[str] = ""
    pattern: ClassVar[str] = ""
    #: Rust-syntax superset of ``pattern`` for Polars (None: the pattern itself).
    prefilter: ClassVar[str | None] = None
    #: Instead of a regex prefilter: literals, one of which (ASCII case-insensitively) every
    #: match contains.  The masker runs the literals of all recognizers as one alternation
    #: first, then each recognizer's on the rows that alternation hit.
    prefilter_literals: ClassVar[tuple[str, ...]] = ()
    #: Name of a recognizer whose regex prefilter matches every string this one's prefilter
    #: matches (each match of this prefilter is also a match of that one): the masker then
    #: runs this prefilter only on the strings that one flags.  Ignored when either is absent.
    prefilter_within: ClassVar[str | None] = None
    #: Higher wins when two accepted spans overlap (then the longer, then the earlier).
    priority: ClassVar[int] = 50
    #: Reject spans glued to a larger token (letters/digits, or ``-./_#`` then letters/digits).
    check_boundaries: ClassVar[bool] = False
    #: Classification a record gets when this entity is found (``privacy.entity_levels`` overrides it).
    level: ClassVar[str] = "confidential"
    #: Default masking strategy of the entity; None: ``privacy.default_strategy`` (``privacy.strategies`` overrides it).
    strategy: ClassVar[str | None] = None

    def __init__(self, options: RecognizerOptions | None = None) -> None:
        self.options = options or RecognizerOptions()

    @property
    def candidate_pattern(self) -> str:
        """The regex prefilter Polars runs over the batch."""
        return self.prefilter or self.pattern

    def candidate_expr(self, col: pl.Expr) -> pl.Expr:
        """The prefilter as a Polars expression: True where the pattern may match."""
        if self.prefilter_literals:
            return col.str.contains(literal_alternation(self.prefilter_literals))
        return col.str.contains(self.candidate_pattern)

    def compiled(self) -> re.Pattern[str]:
        """The Python form of :attr:`pattern` (for tests: the masker runs the Rust form)."""
        return re.compile(self.pattern)

    def locate(self, texts: pl.Series, rows: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate spans ``(row, start, end)`` in ``texts`` (labelled by ``rows``): every
        match of :attr:`pattern`, found by Polars' Rust regex engine.  ``limit``: a row
        with more than this many candidates is over budget, so an implementation may stop
        looking in it once it has returned more than ``limit`` (never fewer)."""
        return regex_spans(texts, rows, self.pattern)

    def find(self, text: str) -> list[Span]:
        """Accepted spans in one text, located the way the masker does; for tests and tools."""
        _, starts, ends = self.locate(pl.Series([text], dtype=pl.Utf8), np.zeros(1, dtype=np.int64))
        return [span for s, e in zip(starts.tolist(), ends.tolist()) for span in self.accept(text, s, e)]

    def validate(self, value: str) -> bool:
        """Whether a candidate is really this entity (checksums, structure)."""
        return True

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        """Spans accepted for the regex match ``text[start:end]``; default: validate it whole."""
        if self.check_boundaries and glued(text, start, end):
            return ()
        return ((start, end),) if self.validate(text[start:end]) else ()

    def shadow(self, text: str, start: int, end: int) -> Span | None:
        """For a candidate that failed validation, a span in which no lower-priority entity
        may be reported (a look-alike IBAN must not come out as a phone number); default none."""
        return None

    def normalize(self, value: str) -> str:
        """Canonical form used for pseudonym tokens, so spelling variants join."""
        return value

    def warm_up(self) -> None:
        """Build what the recognizer loads lazily (tables, metadata); the masker calls it at
        start-up so the first records do not pay for it.  Default: nothing."""


# ---------------------------------------------------------------------------------- helpers

_GLUE = "-./_#"


def glued(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` is part of a larger token, e.g. ``ORD-12345678``,
    ``v10.0.19045``, a UUID group, ``#4155552671`` or ``$1234``."""
    return glued_before(text, start) or glued_after(text, end)


def glued_before(text: str, start: int) -> bool:
    """True when the character(s) before ``start`` tie a span there to a larger token."""
    if start > 0:
        p = text[start - 1]
        if p.isalnum() or p in "#$€£¥@" or (p in _GLUE and start > 1 and text[start - 2].isalnum()):
            return True
    return False


def glued_after(text: str, end: int) -> bool:
    """True when the character(s) from ``end`` tie a span ending there to a larger token."""
    if end < len(text):
        n = text[end]
        if n.isalnum() or n in "%€$" or (n in _GLUE and end + 1 < len(text) and text[end + 1].isalnum()):
            return True
    return False


def continues_digits(text: str, start: int, end: int) -> bool:
    """True when the span continues a run of digit groups that starts before it (``1234 ``
    or ``1234-`` right before it), e.g. the tail of an account or tracking number."""
    return start > 1 and text[start - 1] in " -" and text[start - 2].isdigit()


_WORD = re.compile(r"[^\W\d_]+")


@functools.lru_cache(maxsize=64)
def _lowered(words: tuple[str, ...]) -> frozenset[str]:
    """Lower-cased set of a context word list, built once per (immutable) list."""
    return frozenset(w.lower() for w in words)


def context_has(text: str, start: int, words: tuple[str, ...], window: int) -> bool:
    """True when one of ``words`` (case-insensitive) is among the ``window`` words just before ``start``."""
    if not words:
        return False
    tail = _WORD.findall(text, max(0, start - 48), start)[-window:]
    wanted = _lowered(words)
    return any(w.lower() in wanted for w in tail)


_CLAUSE_END = re.compile(r"[0-9!?;()<>\n]")


def context_verdict(text: str, start: int, reject: tuple[str, ...], accept: tuple[str, ...], window: int = 2) -> bool | None:
    """The nearest of the ``window`` words before ``start`` found in ``reject`` (False) or
    ``accept`` (True) decides; None when neither list names one of them.  Only words after
    the last digit, bracket or ``!?;`` before ``start`` count: a word before another number
    or another sentence is not this number's context."""
    lo = max(0, start - 48)
    for m in _CLAUSE_END.finditer(text, lo, start):
        lo = m.end()
    tail = _WORD.findall(text, lo, start)[-window:]
    rej = _lowered(reject)
    acc = _lowered(accept)
    for w in reversed(tail):
        lw = w.lower()
        if lw in rej:
            return False
        if lw in acc:
            return True
    return None


def _groups(text: str, start: int, end: int, seps: str) -> list[Span]:
    """Spans of the separator-delimited groups of ``text[start:end]``."""
    out: list[Span] = []
    i = start
    while i < end:
        while i < end and text[i] in seps:
            i += 1
        j = i
        while j < end and text[j] not in seps:
            j += 1
        if j > i:
            out.append((i, j))
        i = j
    return out


def group_windows(
    text: str,
    start: int,
    end: int,
    ok: Callable[[int, int], bool],
    seps: str = " ",
    max_groups: int = 6,
    can_start: Callable[[int], bool] | None = None,
    digits: tuple[int, int] = (0, 1 << 30),
) -> list[Span]:
    """Accepted group-aligned windows of a long candidate, left to right: at each group
    (where ``can_start`` allows one to start) the longest window of at most ``max_groups``
    groups, holding ``digits`` (min, max) digits, that ``ok`` accepts is taken, and the scan
    goes on after it.  At most ``max_groups`` checks per group: linear in the candidate."""
    groups = _groups(text, start, end, seps)
    counts = [0]
    for a, b in groups:
        counts.append(counts[-1] + sum(c.isdigit() for c in text[a:b]))
    lo, hi = digits
    out: list[Span] = []
    i = 0
    after_accept = False  # a window right after an accepted one starts a new number
    while i < len(groups):
        accepted = False
        if after_accept or can_start is None or can_start(groups[i][0]):
            for j in range(min(len(groups), i + max_groups) - 1, i - 1, -1):
                if lo <= counts[j + 1] - counts[i] <= hi and ok(groups[i][0], groups[j][1]):
                    out.append((groups[i][0], groups[j][1]))
                    i = j
                    accepted = True
                    break
        after_accept = accepted
        i += 1
    return out


# ------------------------------------------------------------------------------ recognizers


@register
class Email(Recognizer):
    name = "email"
    entity = "EMAIL"
    pattern = r"[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,24}\b"
    prefilter_literals = ('@',)
    priority = 60

    def validate(self, value: str) -> bool:
        local, _, domain = value.rpartition("@")
        if not local or local[0] == "." or local[-1] == "." or ".." in local:
            return False
        return all(label and label[0] != "-" and label[-1] != "-" for label in domain.split("."))

    def normalize(self, value: str) -> str:
        return value.lower()


_EXT = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,6}$")
_PHONE_SEPS = " -./"
_PHONE_MAX_CHARS = 40  # 15 digits, their separators, parentheses and an extension
_PHONE_MAX_STARTS = 64  # number starts examined in one long run of digit groups before the record is over budget
_PHONE_STARTS = re.compile(r"\+|\(|\) ?[0-9]")


@functools.lru_cache(maxsize=4096)
def _international_ok(digits: str) -> bool:
    """A possible number in E.164 terms (country code included, 8 to 15 digits)."""
    if not 8 <= len(digits) <= 15:
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse("+" + digits, None))
    except phonenumbers.NumberParseException:
        return False


#: Number types a person is reached on (not toll-free, premium-rate or shared-cost service numbers).
_PERSONAL_TYPES = ("fixed_line", "mobile", "voip", "personal_number", "voicemail")


@functools.cache
def _bare_national_number() -> re.Pattern[str]:
    """National significant numbers of the regions whose numbers are written without a trunk
    prefix (``phonenumbers`` metadata: no national prefix; Italy, Spain, Portugal, Poland,
    Denmark, Norway, Greece, Mexico ... 101 regions), for the types a person is reached on:
    the regions where a bare run such as ``3780987853`` is how a phone number is written.
    Built once (about 0.1 s; :meth:`Phone.warm_up` runs it at start-up).  Each pattern is a
    bounded run of digits, and it is only applied to bare runs of at most 11 digits."""
    from phonenumbers import PhoneMetadata

    patterns: set[str] = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        md = PhoneMetadata.metadata_for_region(region)
        if md is None or md.national_prefix:
            continue
        for kind in _PERSONAL_TYPES:
            desc = getattr(md, kind)
            if desc is not None and desc.national_number_pattern:
                patterns.add(desc.national_number_pattern)
    return re.compile("|".join(f"(?:{p})" for p in sorted(patterns)))


def _layout_changes(text: str, s: int, run_start: int) -> bool:
    """True when the digit group before ``s`` ends another number: it is glued to letters
    (the tail of a token such as ``2cf802c61753``) or the separator before ``s`` differs
    from the one inside that number (``5370-5234-6670-0097 04 13``)."""
    before = text[s - 1]
    i = s - 2
    while i >= run_start and text[i].isdigit():
        i -= 1
    if i < run_start:
        return i >= 0 and text[i].isalpha()  # the run began with that group
    return text[i].isalpha() or (text[i] in _PHONE_SEPS and text[i] != before)


def _phone_groups(core: str) -> list[int]:
    return [len(g) for g in re.split(r"[ \-./()]+", core) if g]


@register
class Phone(Recognizer):
    """Phone numbers by layout, without needing the region to be configured:

    - international numbers led by ``+`` or ``00`` (a possible number for ``phonenumbers``);
    - North American 3-3-4 layouts (``(591)341-7776``, ``206.269.0743``), whatever the area
      code (unassigned ones included); ten digits in a row when area and exchange codes
      start with 2-9;
    - national layouts with a trunk ``0`` (``0306 9990859``, ``04 98 53 71 93``,
      ``(0141) 496 0717``, ``0232781286``), an area code in parentheses, or three or more
      groups of 2-4 digits (``612 34 56 78``, ``12 3915-0008``), 9 to 12 digits;
    - a bare run of 9 to 11 digits that is a valid number (fixed, mobile, VoIP, personal or
      voicemail) of a region whose numbers are written without a trunk prefix (``3780987853``
      in Italy; ``phonenumbers`` metadata), when no reject word precedes it;
    - any 7 to 15 digits right after a phone word (*call*, *tel*, *rufen*, *rappelez*,
      *llámenme*, *richiamatemi*, *liguem*, *bel* ...);
    - national layouts of the regions in ``privacy.phone_regions`` (``phonenumbers``).

    Dates, times, versions, prices, IP-like dotted quads, digit runs glued to letters or
    ``#`` (order and tracking numbers) and digit runs right after *order*, *invoice*,
    *tracking* and the like are not phones.  A long run of digit groups is split into
    group-aligned windows; windows inside a longer run must have an international,
    North American, parenthesised or phone-word layout."""

    name = "phone"
    entity = "PHONE"
    pattern = r"\+?\(?\+?[0-9][0-9 ().\-/]{5,}[0-9](?: ?(?:x|ext\.?) ?[0-9]{1,6})?"
    prefilter = r"[0-9][0-9 ().\-/]{5,}[0-9]"
    priority = 40

    def warm_up(self) -> None:
        _bare_national_number()

    def _ok(self, text: str, start: int, end: int, whole: bool, started: bool = False) -> bool:
        """Whether ``text[start:end]`` is a phone number; ``whole``: judged by every rule (not a
        prefix of a longer run); ``started``: a window that begins where another number ended."""
        while text[start] == "(" and text.count("(", start, end) > text.count(")", start, end):
            start += 1  # an opening bracket around the number, not part of it
        led = started or text[start] in "+("  # a visible start: the digits before it are another number
        if glued_after(text, end) or glued_before(text, start) or (not led and continues_digits(text, start, end)):
            return False
        cand = text[start:end]
        m = _EXT.search(cand)
        core = cand[: m.start()] if m else cand
        if core.count("(") != core.count(")") or core.endswith(("(", "-", ".", "/")):
            return False
        digits = v.digits_of(core.replace("(0)", "") if core.startswith("+") else core)  # +49 (0) 30 ...: the trunk 0 is not dialled
        if not 7 <= len(digits) <= 15 or v.looks_like_date(core) or (core.isdigit() and v.looks_like_compact_date(core)):
            return False
        o = self.options
        intl = core.startswith("+") or core.startswith("00")
        verdict = context_verdict(text, start, o.phone_reject_context, o.phone_accept_context, o.phone_context_window)
        if verdict is False and not core.startswith("+"):
            return False
        if intl:
            if _international_ok(digits[2:] if core.startswith("00") else digits):
                return True
            if core.startswith("+"):
                return False
            intl = False  # "00" then no possible country code: judged as a national number (its trunk 0, its layout)
        groups = _phone_groups(core)
        seps = {c for c in core if not c.isdigit()} - {"+"}
        if seps == {"."} and len(groups) >= 4:
            return False  # dotted quads and versions
        if v.nanp_ok(core) or (groups[-3:] == [3, 3, 4] and len(groups) <= 4 and sum(groups) in (10, 11) and seps):
            return True
        for region in o.phone_regions:
            try:
                num = phonenumbers.parse(core, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return True
            if phonenumbers.is_possible_number(num) and (not core.isdigit() or digits.startswith("0")):
                return True
        if verdict is True:
            return True
        if "(" in core and 8 <= len(digits) <= 12 and seps <= {"(", ")", " ", "-", ".", "/"}:
            return True
        if not whole or not 9 <= len(digits) <= 12:
            return False
        if digits[0] == "0" and not intl:
            return True  # a national number with its trunk 0
        if core.isdigit() and len(digits) <= 11 and _bare_national_number().fullmatch(digits):
            return True  # a bare run that is a valid number where numbers are written without a trunk prefix
        return len(groups) >= 3 and all(2 <= g <= 4 for g in groups[1:]) and 1 <= groups[0] <= 4

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        if text[start] == "(" and text.find(")", start, end) == -1:
            start += 1  # "(+1 415 555 2671)": the closing parenthesis is not part of the match
        if end - start <= _PHONE_MAX_CHARS:
            if self._ok(text, start, end, True):
                return ((start, end),)
            # A window after the first group starts right after a separator that follows a
            # digit (the tail of a longer number) unless a ")" or "+" stands there.
            # A window at a visible start inside the run is judged like a whole number; one at
            # the run's head (a prefix of a longer number) only by the strong layouts.
            return group_windows(text, start, end, lambda s, e: self._ok(text, s, e, s != start, s != start), _PHONE_SEPS, can_start=self._can_start(text, start), digits=(7, 15))
        # A long run of digit groups: numbers are looked for where one visibly starts (a "+",
        # a "(", or a group after a ")"), each in a window of at most _PHONE_MAX_CHARS characters.
        out: list[Span] = []
        tried = 0
        for m in _PHONE_STARTS.finditer(text, start, end):
            p = m.end() - 1 if m.group().startswith(")") else m.start()
            if out and p < out[-1][1]:
                continue
            tried += 1
            if tried > _PHONE_MAX_STARTS:
                raise BudgetExceeded(f"more than {_PHONE_MAX_STARTS} possible number starts in one run of digit groups")
            stop = min(end, p + _PHONE_MAX_CHARS)
            out += group_windows(text, p, stop, lambda s, e: self._ok(text, s, e, False), _PHONE_SEPS, can_start=lambda s, p=p: s == p, digits=(7, 15))
        return out

    @staticmethod
    def _can_start(text: str, run_start: int) -> Callable[[int], bool]:
        """Where a window may start inside a run: at a "+" or "(", or where the layout
        changes (``5370-5234-6670-0097 04 13 38 98 25``: spaces after dashes), never in
        the middle of one number's groups (``9400 1234 0567 8901``)."""

        def ok(s: int) -> bool:
            if text[s] in "+(":
                return True
            if glued_before(text, s):
                return False
            return not continues_digits(text, s, s) or _layout_changes(text, s, run_start)

        return ok

    def normalize(self, value: str) -> str:
        m = _EXT.search(value)
        core = value[: m.start()] if m else value
        digits = v.digits_of(core)
        if core.startswith("00"):
            digits = digits[2:]
        elif not core.startswith("+") and len(digits) == 10 and digits[0] != "0":
            digits = "1" + digits
        return "+" + digits


@register
class CreditCard(Recognizer):
    """Payment cards: 12-19 digits with a known issuer prefix and a valid Luhn digit, in
    card layouts (one group, groups of four, Amex 4-6-5, or one digit at a time) with one
    kind of separator (space, dash or dot; tabs, new lines and repeated spaces read as one
    space).  A longer run of digit groups is a card only when it starts with the card and
    at most one group of up to four digits follows (an expiry date) and the card has 15 digits
    or more (a 12-digit Maestro number at the head of a 16-digit run is a look-alike)."""

    name = "credit_card"
    entity = "CREDIT_CARD"
    level = "restricted"
    pattern = r"[0-9](?:[ .\-]?[0-9]){11,}"
    prefilter = r"(?:[0-9][ .\-]?){11}[0-9]"
    # a match: 23 or fewer of [0-9 .-], a digit first and last, 12 or more characters
    prefilter_within = "phone"
    priority = 75

    def _context_ok(self, text: str, start: int, end: int) -> bool:
        if not text[start:end].isdigit():
            return True
        o = self.options
        # a bare digit run right after "tracking", "order", ... is not a card
        reject = tuple(w for w in o.phone_reject_context if w not in o.card_accept_context)
        return context_verdict(text, start, reject, o.card_accept_context, o.context_window) is not False

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        if end - start > 48 or glued(text, start, end) or continues_digits(text, start, end):
            return ()  # 19 digits with separators and a short tail fit in 48 characters
        if v.card_ok(text[start:end]):
            return ((start, end),) if self._context_ok(text, start, end) else ()
        groups = _groups(text, start, end, " .-")
        if len(groups) >= 3 and groups[-1][1] - groups[-1][0] <= 4:
            head_end = groups[-2][1]
            head = text[start:head_end]
            if sum(c.isdigit() for c in head) >= 15 and v.card_ok(head) and self._context_ok(text, start, head_end):
                return ((start, head_end),)
        return ()

    def normalize(self, value: str) -> str:
        return v.digits_of(value)


@register
class UsSsn(Recognizer):
    name = "us_ssn"
    entity = "US_SSN"
    level = "restricted"
    pattern = r"[0-9]{3}[\- .][0-9]{2}[\- .][0-9]{4}"
    prefilter = None
    prefilter_within = "phone"  # a match: 11 of [0-9 .-], a digit first and last
    priority = 70
    check_boundaries = True

    def validate(self, value: str) -> bool:
        return v.ssn_ok(value)

    def normalize(self, value: str) -> str:
        return v.digits_of(value)


@register
class Iban(Recognizer):
    """IBANs in upper or lower case, compact or in groups (checksum and country length checked)."""

    name = "iban"
    entity = "IBAN"
    level = "restricted"
    pattern = r"\b[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?"
    prefilter = r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11}"
    priority = 80

    @staticmethod
    def _cut(text: str, start: int, end: int) -> int | None:
        """End of the IBAN at its country's length (the regex may have run into a following word)."""
        expected = v.IBAN_LENGTHS.get(text[start : start + 2].upper())
        if expected is None:
            return None
        count, cut = 0, start
        while cut < end and count < expected:
            if text[cut] != " ":
                count += 1
            cut += 1
        if count != expected or (cut < len(text) and text[cut].isalnum()):
            return None
        return cut

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        if start > 0 and text[start - 1].isalnum():
            return ()
        cut = self._cut(text, start, end)
        return ((start, cut),) if cut is not None and v.iban_ok(text[start:cut]) else ()

    def shadow(self, text: str, start: int, end: int) -> Span | None:
        if text[start : start + 2] not in v.IBAN_LENGTHS or (start > 0 and text[start - 1].isalnum()):
            return None
        return (start, self._cut(text, start, end) or end)

    def normalize(self, value: str) -> str:
        return value.replace(" ", "").upper()


@register
class Ipv4(Recognizer):
    name = "ipv4"
    entity = "IP_ADDRESS"
    pattern = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
    prefilter = None
    prefilter_within = "phone"  # a match: 7 or more of [0-9.], a digit first and last
    priority = 55

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "."):
            return ()
        if end < len(text) and (text[end].isalnum() or (text[end] == "." and end + 1 < len(text) and text[end + 1].isdigit())):
            return ()
        if not v.ipv4_ok(text[start:end]):
            return ()
        if context_has(text, start, self.options.ip_reject_context, 1):
            return ()
        return ((start, end),)


@register
class Ipv6(Recognizer):
    name = "ipv6"
    entity = "IP_ADDRESS"
    pattern = r"(?:[0-9A-Fa-f]{0,4}:){2,8}[0-9A-Fa-f.]*"
    prefilter = r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:"
    priority = 55

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        # sentence punctuation may trail the address
        while end > start and text[end - 1] == "." :
            end -= 1
        if end - start < 3:
            return ()
        if end > start + 1 and text[end - 1] == ":" and text[end - 2] != ":":
            end -= 1
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_:"):
            return ()
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            return ()
        return ((start, end),) if v.ipv6_ok(text[start:end]) else ()

    def normalize(self, value: str) -> str:
        return value.lower()


class _Secret(Recognizer):
    entity = "SECRET"
    level = "restricted"
    strategy = "redact"
    priority = 90


@register
class OpenAiStyleKey(_Secret):
    """``sk-...`` keys (OpenAI, project and service-account keys, Anthropic's ``sk-ant-``)."""

    name = "openai_key"
    pattern = r"\bsk-[A-Za-z0-9_\-]{20,}"
    prefilter_literals = ('sk-',)

    def validate(self, value: str) -> bool:
        return v.random_token_ok(value[3:], min_len=20)


@register
class AwsAccessKey(_Secret):
    name = "aws_access_key"
    pattern = r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"
    prefilter_literals = ('AKIA', 'ASIA', 'ABIA', 'ACCA')


@register
class GithubToken(_Secret):
    name = "github_token"
    pattern = r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})\b"
    prefilter_literals = ('ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_', 'github_pat_')


@register
class SlackToken(_Secret):
    name = "slack_token"
    pattern = r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"
    prefilter_literals = ('xox',)


@register
class StripeKey(_Secret):
    name = "stripe_key"
    pattern = r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    prefilter_literals = ('sk_live_', 'sk_test_', 'rk_live_', 'rk_test_')


@register
class GoogleApiKey(_Secret):
    name = "google_api_key"
    pattern = r"\bAIza[0-9A-Za-z_\-]{35}"
    prefilter_literals = ('AIza',)


@register
class Jwt(_Secret):
    name = "jwt"
    pattern = r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{8,}"
    prefilter_literals = ('eyJ',)
    priority = 92

    def validate(self, value: str) -> bool:
        return v.jwt_ok(value)


_AUTH_VALUE = re.compile(r"(?i)(?:bearer|basic|token)\s+")


@register
class BearerToken(_Secret):
    """The credential after ``Bearer``/``Token`` (any opaque token) or ``Basic`` (base64 user:password)."""

    name = "bearer_token"
    pattern = r"\b(?:[Bb]earer|BEARER|[Tt]oken|[Bb]asic)\s+[A-Za-z0-9._~+/\-]{12,}=*"
    prefilter_literals = ('bearer', 'token', 'basic')

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        m = _AUTH_VALUE.match(text, start, end)
        if m is None:
            return ()
        value = text[m.end() : end]
        scheme = text[start : m.end()].strip().lower()
        if scheme == "basic":
            ok = v.basic_auth_ok(value)
        elif scheme == "bearer":
            ok = len(value) >= 12 and v.shannon_entropy(value) >= 3.0
        else:
            ok = v.random_token_ok(value.rstrip("="), min_len=12, min_entropy=2.5) or v.jwt_ok(value)
        return ((m.end(), end),) if ok else ()


@register
class PrivateKeyBlock(_Secret):
    """A PEM private key: from ``-----BEGIN ... PRIVATE KEY-----`` to its END line, or to the end
    of the base64 body when the END line is missing (truncated paste)."""

    name = "private_key"
    pattern = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"
    prefilter_literals = ('PRIVATE KEY-----',)
    priority = 100
    _end = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
    _body = re.compile(r"[A-Za-z0-9+/=\s:\-,]*")

    #: Longest PEM body searched for its END line (an RSA 8192 key is about 6,400 characters).
    _max_block = 16_384

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        limit = min(len(text), end + self._max_block)
        m = self._end.search(text, end, limit)
        if m is not None:
            return ((start, m.end()),)
        body = self._body.match(text, end, limit)
        return ((start, body.end() if body else end),)


_ASSIGN_KEYS = (
    r"password|passwd|passphrase|pwd|secret|client_secret|api[_\-]?key|apikey|"
    r"access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|secret[_\-]?key|private[_\-]?key|"
    r"aws_secret_access_key|token"
)
_ASSIGN_VALUE = re.compile(r"""["']?\s*[:=]\s*["']?""")


@register
class PasswordAssignment(_Secret):
    """The value in ``password=...``, ``"api_key": "..."``, ``secret: ...`` and similar."""

    name = "password_assignment"
    pattern = rf"""(?i)\b(?:[a-z0-9]+[_.\-])*(?:{_ASSIGN_KEYS})["']?\s*[:=]\s*["']?[^\s"',;<>]{{3,}}"""
    prefilter_literals = ('password', 'passwd', 'passphrase', 'pwd', 'secret', 'api_key', 'api-key', 'apikey', 'token', 'private_key', 'private-key', 'privatekey')
    priority = 85

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        i = start
        while i < end and (text[i].isalnum() or text[i] in "_-."):
            i += 1
        m = _ASSIGN_VALUE.match(text, i, end)
        if m is None:
            return ()
        s = m.end()
        e = end
        while e > s and text[e - 1] in ".)]}":
            e -= 1
        value = text[s:e]
        if len(value) < 3 or set(value) <= {"*", "x", "X", "."} or value.lower() in {"null", "none", "true", "false", "redacted", "masked"}:
            return ()
        return ((s, e),)


@register
class UrlCredentials(Recognizer):
    """The ``user:password`` part of ``scheme://user:password@host``."""

    name = "url_credentials"
    entity = "URL_CREDENTIALS"
    level = "restricted"
    strategy = "redact"
    pattern = r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]+:[^\s/@]+@"
    prefilter_literals = ('://',)
    priority = 95

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        s = text.index("://", start, end) + 3
        return ((s, end - 1),)


# ------------------------------------------------------------------------------ names

_UPPER = "A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽ"
_LOWER = "a-zß-öø-ÿā-ž"
_NAME_WORD = f"[{_UPPER}][{_LOWER}{_UPPER}'’]*[{_LOWER}](?:-[{_UPPER}][{_LOWER}'’]+)?"
_PARTICLE = r"(?:van|von|de|der|den|da|di|del|della|do|dos|das|du|le|la|ter|ten|y|e|zu|d'|'t)"
_TITLE = f"(?:[{_UPPER}][{_LOWER}]{{0,5}}\\.(?:-?[{_UPPER}]?[{_LOWER}]{{0,5}}\\.?)?[ ]+)"
_NAME = f"{_TITLE}{{0,3}}{_NAME_WORD}(?:[ ]+(?:{_PARTICLE}[ ]+){{0,2}}{_NAME_WORD}){{0,3}}"

def _cues(*phrases: str) -> str:
    """An alternation of cue phrases matching them as written, with a capital first letter, or
    with every word capitalised (German nouns: "Mein Name ist"); no case-insensitive flag, which
    would blow up the regex automaton."""
    out: set[str] = set()
    for p in phrases:
        for variant in (p, p.title()):
            head, tail = variant[0], re.escape(variant[1:]).replace("\\ ", " ")
            out.add(f"[{head.upper()}{head}]{tail}" if head.isalpha() else re.escape(variant))
    return "|".join(sorted(out, key=lambda x: (-len(x), x)))


_INTRO_WORDS = (
    "my name is", "my name's", "i am called", "mein name ist", "mein Name ist", "ich heiße", "ich heisse", "je m'appelle", "je m’appelle", "mon nom est",
    "me llamo", "mi nombre es", "mi chiamo", "il mio nome è", "meu nome é", "me chamo", "mijn naam is", "ik heet",
    "name:", "name :", "nom :", "nom:", "nome:", "nombre:", "naam:",
)
_GREETING_WORDS = (
    "dear", "hi", "hello", "hey", "hallo", "liebe", "lieber", "sehr geehrte", "sehr geehrter", "guten tag", "bonjour", "salut",
    "cher", "chère", "hola", "estimado", "estimada", "ciao", "gentile", "caro", "cara", "buongiorno", "olá", "oi", "prezado",
    "prezada", "beste", "geachte", "hoi",
)
_SIGN_OFF_WORDS = (
    "regards", "best regards", "kind regards", "thanks", "thank you", "cheers", "sincerely", "best", "mit freundlichen grüßen",
    "viele grüße", "cordialement", "bien à vous", "saludos", "un saludo", "atentamente", "cordiali saluti", "saluti",
    "distinti saluti", "atenciosamente", "abraços", "met vriendelijke groet", "groeten", "vriendelijke groeten",
)
_HONORIFIC_WORDS = ("Mr", "Mrs", "Ms", "Mx", "Miss", "Dr", "Herr", "Frau", "Monsieur", "Madame", "Mme", "Mlle", "Señor", "Señora", "Sr", "Sra", "Srta", "Signor", "Signora", "Sig", "Dott", "Dhr", "Mevr", "Senhor", "Senhora")
_CONTACT_WORDS = ("contact", "kontakt", "contacto", "contatto", "contato", "ansprechpartner", "interlocuteur")
_INTRO = _cues(*_INTRO_WORDS)
_GREETING = _cues(*_GREETING_WORDS)
_SIGN_OFF = _cues(*_SIGN_OFF_WORDS)
_HONORIFIC = "|".join(re.escape(w) for w in sorted(_HONORIFIC_WORDS, key=len, reverse=True)) + r"|Sig\.ra"
_CONTACT = _cues(*_CONTACT_WORDS)
_PERSON_CUES = (
    ("intro", re.compile(f"(?:{_INTRO})[ \t]*:?[ \t]*")),
    ("greeting", re.compile(f"(?:{_GREETING})[ \t]+")),
    ("sign_off", re.compile(f"(?:{_SIGN_OFF})[ \t]*[,!.]?[ \t]*\n?[ \t]*")),
    ("honorific", re.compile(f"(?:{_HONORIFIC})\\.?[ \t]+")),
    ("contact", re.compile(f"(?:{_CONTACT})[ \t]*:?[ \t]+")),
)
_NAME_RE = re.compile(_NAME)
_NAME_MAX = 80
#: Words that follow a greeting or a cue without being a name.
_NOT_NAMES = frozenset(
    "team all everyone there sir madam madame customer customers support service friends folks guys kunde kunden kundenservice "
    "damen herren équipe equipo cliente clienti squadra klant klantenservice the this that my our your please thanks thank you "
    "i we it us them order invoice monday tuesday wednesday thursday friday saturday sunday".split()
)


@register
class PersonContext(Recognizer):
    """PERSON names found offline by their context, without a language model: after an
    introduction (*my name is*, *mein Name ist*, *je m'appelle*, *me llamo*, *mi chiamo*,
    *meu nome é*, *mijn naam is*, *name:*), a greeting followed by punctuation (*Dear Anna,*,
    *Hallo Jan!*), a sign-off (*Regards,\\nMaria Rossi*), an honorific (*Mr. Smith*, *Frau
    Weber*) or *Contact X (...)*.  A name is one to four capitalised words, with particles
    (*van der*, *de la*, *dos*) and abbreviated titles (*Dr.*, *Prof.*) allowed.  Optional NER
    (spaCy, ``privacy.person``) adds names without such context."""

    name = "person_context"
    entity = "PERSON"
    # Polars finds the cue and the capital letter after it; accept() reads the name itself
    # (at most _NAME_MAX characters, so Python's regex works on a short window only).
    pattern = f"(?:{_INTRO}|{_GREETING}|{_SIGN_OFF}|{_CONTACT}|{_HONORIFIC})[ \\t:,!.\\n]{{1,6}}[{_UPPER}]"
    prefilter = "(?i-u:\\b(?:" + "|".join(re.escape(w) for w in sorted({*_INTRO_WORDS, *_GREETING_WORDS, *_SIGN_OFF_WORDS, *_CONTACT_WORDS, *_HONORIFIC_WORDS}, key=len, reverse=True)) + "))[ \\t:,!.\\n]"
    priority = 20

    def locate(self, texts: pl.Series, rows: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cue positions from Polars' Aho-Corasick search (a regex alternation of hundreds of
        cue spellings is a slow automaton), each checked with the pattern anchored there."""
        found = pl.DataFrame({"t": texts}).select(pl.col("t").str.find_many(_CUE_LITERALS_EXPR, ascii_case_insensitive=True, leftmost=True)).to_series().to_list()
        out_r: list[int] = []
        out_s: list[int] = []
        out_e: list[int] = []
        for r, text, offsets in zip(np.asarray(rows).tolist(), texts.to_list(), found):
            if not offsets:
                continue
            raw = None if text.isascii() else text.encode()
            if limit is not None and len(offsets) > 4 * limit:
                # Cues far over the budget: report limit + 1 unchecked positions, so the row is
                # refused as over budget rather than scanned in part.
                out_r += [r] * (limit + 1)
                out_s += offsets[: limit + 1]
                out_e += [b + 1 for b in offsets[: limit + 1]]
                continue
            found_here = 0
            for b in offsets:
                pos = b if raw is None else len(raw[:b].decode("utf-8", "ignore"))
                if pos and text[pos - 1].isalnum():
                    continue  # inside a word ("this" holds "hi")
                m = _PERSON_AT.match(text, pos)
                if m is not None:
                    out_r.append(r)
                    out_s.append(m.start())
                    out_e.append(m.end())
                    found_here += 1
                    if limit is not None and found_here > limit:
                        break
        return np.asarray(out_r, dtype=np.int64), np.asarray(out_s, dtype=np.int64), np.asarray(out_e, dtype=np.int64)

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        if start > 0 and text[start - 1].isalnum():
            return ()
        limit = min(len(text), end + _NAME_MAX)
        for kind, cue in _PERSON_CUES:
            m = cue.match(text, start, end)
            if m is None or m.end() != end - 1:
                continue
            name = _NAME_RE.match(text, m.end(), limit)
            if name is None:
                continue
            s, e = name.span()
            after = text[e : e + 3].lstrip(" \t")
            if kind == "greeting" and not (after[:1] in (",", "!", ":", "\n") or e == len(text)):
                return ()
            if kind == "contact" and not after.startswith("("):
                return ()
            words = text[s:e].split()
            first = words[0].rstrip(".").lower()
            if first in _NOT_NAMES or (kind == "greeting" and any(w.lower() in _NOT_NAMES for w in words)):
                return ()
            return ((s, e),)
        return ()


#: Cue words, longest first (Aho-Corasick takes the first listed at one position).
_CUE_LITERALS = sorted({*_INTRO_WORDS, *_GREETING_WORDS, *_SIGN_OFF_WORDS, *_CONTACT_WORDS, *_HONORIFIC_WORDS}, key=len, reverse=True)
_CUE_LITERALS_EXPR = pl.lit(_CUE_LITERALS, dtype=pl.List(pl.Utf8))
_PERSON_AT = re.compile(PersonContext.pattern)


__all__ = [
    "BudgetExceeded",
    "RECOGNIZERS",
    "Recognizer",
    "RecognizerOptions",
    "Span",
    "entity_defaults",
    "group_windows",
    "context_has",
    "context_verdict",
    "continues_digits",
    "glued",
    "register",
]
