"""PII recognizers: one small registered class per kind of value.

A recognizer declares a ``pattern`` (Python :mod:`re`, run only on candidate rows to
locate the spans) and a ``prefilter`` (Rust ``regex`` syntax, run by Polars over the
whole batch to find the candidate rows; it must match every text the pattern matches,
and is kept free of costly constructs such as Unicode ``\b``; by default it is the
pattern itself).  ``accept`` then runs the recognizer's validator on each candidate and
returns the accepted ``(start, end)`` spans, which may be narrower than the regex match
(a ``password=`` value, the user-info of a URL).

Adding an entity is one class::

    @register
    class EmployeeId(Recognizer):
        name = "employee_id"
        entity = "EMPLOYEE_ID"
        pattern = r"\\bEMP-\\d{6}\\b"

>>> rec = RECOGNIZERS["credit_card"](RecognizerOptions())
>>> text = "card 4111 1111 1111 1111, ref 4111 1111 1111 1112"
>>> [text[s:e] for s, e in rec.spans(text, rec.compiled().finditer(text))]
['4111 1111 1111 1111']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import phonenumbers

from driftline.operators.pii import validators as v

Span = tuple[int, int]

RECOGNIZERS: dict[str, type[Recognizer]] = {}


def register(cls: type[Recognizer]) -> type[Recognizer]:
    """Class decorator adding a recognizer to :data:`RECOGNIZERS` under ``cls.name``."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", cls.name):
        raise ValueError(f"recognizer name {cls.name!r} must be lower_snake_case")
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", cls.entity):
        raise ValueError(f"recognizer {cls.name!r}: entity {cls.entity!r} must be UPPER_SNAKE_CASE")
    RECOGNIZERS[cls.name] = cls
    return cls


@dataclass(frozen=True, slots=True)
class RecognizerOptions:
    """Settings recognizers read from ``privacy`` configuration (immutable)."""

    phone_regions: tuple[str, ...] = ()
    phone_reject_context: tuple[str, ...] = (
        "order", "invoice", "ticket", "tracking", "shipment", "parcel", "reference", "ref",
        "sku", "serial", "transaction", "case", "account", "iban", "card", "version", "build",
    )  # fmt: skip
    phone_accept_context: tuple[str, ...] = (
        "phone", "call", "tel", "telephone", "mobile", "cell", "reach", "whatsapp", "fax", "sms", "text",
        "telefon", "téléphone", "teléfono", "telefono", "telefoon", "celular", "handy", "portable",
    )  # fmt: skip
    card_accept_context: tuple[str, ...] = (
        "card", "visa", "mastercard", "amex", "maestro", "paid", "charged", "payment", "kreditkarte", "karte", "carte",
        "tarjeta", "carta", "cartão", "creditcard",
    )  # fmt: skip
    ip_reject_context: tuple[str, ...] = ("version", "v", "build", "release", "firmware", "versión", "versione", "versie")
    context_window: int = 2
    extra: dict[str, str] = field(default_factory=dict)


class Recognizer:
    """Base class: a pattern, an optional validator and a priority for overlaps."""

    name: ClassVar[str] = ""
    entity: ClassVar[str] = ""
    pattern: ClassVar[str] = ""
    #: Rust-syntax superset of ``pattern`` for Polars (None: the pattern itself).
    prefilter: ClassVar[str | None] = None
    #: Higher wins when two accepted spans overlap (then the longer, then the earlier).
    priority: ClassVar[int] = 50
    #: Reject spans glued to a larger token (letters/digits, or ``-./_#`` then letters/digits).
    check_boundaries: ClassVar[bool] = False

    def __init__(self, options: RecognizerOptions | None = None) -> None:
        self.options = options or RecognizerOptions()

    @property
    def candidate_pattern(self) -> str:
        """The pattern Polars runs over the batch."""
        return self.prefilter or self.pattern

    def compiled(self) -> re.Pattern[str]:
        """The Python form of :attr:`pattern` (compiled once by the masker)."""
        return re.compile(self.pattern)

    def validate(self, value: str) -> bool:
        """Whether a candidate is really this entity (checksums, structure)."""
        return True

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        """Spans accepted for the regex match ``text[start:end]``; default: validate it whole."""
        if self.check_boundaries and glued(text, start, end):
            return ()
        return ((start, end),) if self.validate(text[start:end]) else ()

    def spans(self, text: str, matches: Iterable[re.Match[str]]) -> Iterator[Span]:
        """Accepted spans for all regex matches in ``text``."""
        for m in matches:
            yield from self.accept(text, m.start(), m.end())

    def shadow(self, text: str, start: int, end: int) -> Span | None:
        """For a candidate that failed validation, a span in which no lower-priority entity
        may be reported (a look-alike IBAN must not come out as a phone number); default none."""
        return None

    def scan(self, text: str, matches: Iterable[re.Match[str]]) -> tuple[list[Span], list[Span]]:
        """Accepted spans and shadow spans of rejected candidates."""
        accepted: list[Span] = []
        shadows: list[Span] = []
        for m in matches:
            got = list(self.accept(text, m.start(), m.end()))
            if got:
                accepted += got
            else:
                sh = self.shadow(text, m.start(), m.end())
                if sh is not None:
                    shadows.append(sh)
        return accepted, shadows

    def normalize(self, value: str) -> str:
        """Canonical form used for pseudonym tokens, so spelling variants join."""
        return value


# ---------------------------------------------------------------------------------- helpers

_GLUE = "-./_#"


def glued(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` is part of a larger token, e.g. ``ORD-12345678``,
    ``v10.0.19045``, a UUID group, ``#4155552671`` or ``$1234``."""
    if start > 0:
        p = text[start - 1]
        if p.isalnum() or p in "#$€£¥@" or (p in _GLUE and start > 1 and text[start - 2].isalnum()):
            return True
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


def context_verdict(text: str, start: int, reject: tuple[str, ...], accept: tuple[str, ...], window: int = 2) -> bool | None:
    """The nearest of the ``window`` words before ``start`` found in ``reject`` (False) or
    ``accept`` (True) decides; None when neither list names one of them."""
    tail = _WORD.findall(text, max(0, start - 48), start)[-window:]
    rej = _lowered(reject)
    acc = _lowered(accept)
    for w in reversed(tail):
        lw = w.lower()
        if lw in rej:
            return False
        if lw in acc:
            return True
    return None


def _chunks(text: str, start: int, end: int, seps: str) -> list[Span]:
    bounds: list[Span] = []
    i = start
    while i < end:
        while i < end and text[i] in seps:
            i += 1
        j = i
        while j < end and text[j] not in seps:
            j += 1
        if j > i:
            bounds.append((i, j))
        i = j
    return bounds[:12]


def best_windows(
    text: str, start: int, end: int, ok: Callable[[int, int], bool], seps: str = " ", digits: tuple[int, int] = (0, 10_000)
) -> list[Span]:
    """Accepted chunk-aligned windows of a candidate: the whole candidate if ``ok``, else the
    longest accepted window, then the remainders on each side, recursively.  Windows whose
    count of digits falls outside ``digits`` (min, max) are not tried."""
    if start >= end:
        return []
    bounds = _chunks(text, start, end, seps)
    counts = [sum(ch.isdigit() for ch in text[a:b]) for a, b in bounds]
    lo, hi = digits
    total = sum(counts)
    if lo <= total <= hi and ok(start, end):
        return [(start, end)]
    if len(bounds) < 2:
        return []
    windows = []
    for a in range(len(bounds)):
        n = 0
        for b in range(a, len(bounds)):
            n += counts[b]
            if n > hi:
                break
            if n >= lo and (a, b) != (0, len(bounds) - 1):
                windows.append((bounds[a][0], bounds[b][1]))
    windows.sort(key=lambda w: (w[0] - w[1], w[0]))
    for s, e in windows:
        if ok(s, e):
            return best_windows(text, start, s, ok, seps, digits) + [(s, e)] + best_windows(text, e, end, ok, seps, digits)
    return []


# ------------------------------------------------------------------------------ recognizers


@register
class Email(Recognizer):
    name = "email"
    entity = "EMAIL"
    pattern = r"(?<![\w.%+\-])[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,24}\b"
    prefilter = "@"
    priority = 60

    def validate(self, value: str) -> bool:
        local, _, domain = value.rpartition("@")
        if not local or local[0] == "." or local[-1] == "." or ".." in local:
            return False
        return all(label and label[0] != "-" and label[-1] != "-" for label in domain.split("."))

    def normalize(self, value: str) -> str:
        return value.lower()


_EXT = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,6}$")


@register
class Phone(Recognizer):
    """North American numbers in the usual layouts and international numbers led by ``+``
    or ``00`` (checked with ``phonenumbers``).  National layouts of other countries only
    for regions listed in ``privacy.phone_regions``.  Dates, prices, versions and order
    numbers fail the layout rules, the boundary rule or the context rule."""

    name = "phone"
    entity = "PHONE"
    pattern = r"(?:\+\s?|\(|\b)\d[\d ().\-]{5,22}\d(?:\s?(?:x|ext\.?)\s?\d{1,6})?"
    prefilter = r"\d[\d ().\-]{5,22}\d"
    priority = 40

    def _ok(self, text: str, start: int, end: int) -> bool:
        if glued(text, start, end) or continues_digits(text, start, end):
            return False
        cand = text[start:end]
        m = _EXT.search(cand)
        core = cand[: m.start()] if m else cand
        if core.count("(") != core.count(")"):
            return False
        digits = v.digits_of(core)
        o = self.options
        if v.looks_like_date(core):
            return False
        if core.isdigit() and context_verdict(text, start, o.phone_reject_context, o.phone_accept_context, o.context_window) is False:
            return False
        if core.startswith("+") or core.startswith("00"):
            if _international_ok(digits[2:] if core.startswith("00") else digits):
                return True
            if core.startswith("+") or not o.phone_regions:
                return False
        if v.nanp_ok(core):
            return True
        # National layouts of the configured regions.  A bare digit run has already passed
        # the context rule above; it must be a valid number, or a possible one led by the
        # trunk 0.  A spaced or dashed layout only needs to be a possible number.
        for region in o.phone_regions:
            try:
                num = phonenumbers.parse(core, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return True
            if phonenumbers.is_possible_number(num) and (not core.isdigit() or digits.startswith("0")):
                return True
        return False

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        return best_windows(text, start, end, lambda s, e: self._ok(text, s, e), digits=(7, 21))

    def normalize(self, value: str) -> str:
        m = _EXT.search(value)
        core = value[: m.start()] if m else value
        digits = v.digits_of(core)
        if core.startswith("00"):
            digits = digits[2:]
        elif not core.startswith("+") and len(digits) == 10:
            digits = "1" + digits
        return "+" + digits


def _international_ok(digits: str) -> bool:
    """A possible number in E.164 terms (country code included, 8 to 15 digits)."""
    if not 8 <= len(digits) <= 15:
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse("+" + digits, None))
    except phonenumbers.NumberParseException:
        return False


@register
class CreditCard(Recognizer):
    name = "credit_card"
    entity = "CREDIT_CARD"
    pattern = r"\b(?:\d[ \-]?){11,18}\d\b"
    prefilter = r"(?:\d[ \-]?){11,18}\d"
    priority = 75

    def _ok(self, text: str, start: int, end: int, whole: bool) -> bool:
        if glued(text, start, end) or continues_digits(text, start, end) or not v.card_ok(text[start:end]):
            return False
        if not whole and end + 1 < len(text) and text[end] in " -" and text[end + 1].isdigit():
            return False  # a short card inside a longer digit run (e.g. a bad-checksum 16-digit number)
        o = self.options
        if text[start:end].isdigit():
            # a bare digit run right after "tracking", "order", ... is not a card
            reject = tuple(w for w in o.phone_reject_context if w not in o.card_accept_context)
            return context_verdict(text, start, reject, o.card_accept_context, o.context_window) is not False
        return True

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        return best_windows(text, start, end, lambda s, e: self._ok(text, s, e, (s, e) == (start, end)), seps=" -", digits=(12, 19))

    def normalize(self, value: str) -> str:
        return v.digits_of(value)


@register
class UsSsn(Recognizer):
    name = "us_ssn"
    entity = "US_SSN"
    pattern = r"\b\d{3}[\- ]\d{2}[\- ]\d{4}\b"
    prefilter = r"\d{3}[\- ]\d{2}[\- ]\d{4}"
    priority = 70
    check_boundaries = True

    def validate(self, value: str) -> bool:
        return v.ssn_ok(value)

    def normalize(self, value: str) -> str:
        return v.digits_of(value)


@register
class Iban(Recognizer):
    name = "iban"
    entity = "IBAN"
    pattern = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"
    prefilter = r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"
    priority = 80

    @staticmethod
    def _cut(text: str, start: int, end: int) -> int | None:
        """End of the IBAN at its country's length (the regex may have run into a following word)."""
        expected = v.IBAN_LENGTHS.get(text[start : start + 2])
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
        cut = self._cut(text, start, end)
        return ((start, cut),) if cut is not None and v.iban_ok(text[start:cut]) else ()

    def shadow(self, text: str, start: int, end: int) -> Span | None:
        if text[start : start + 2] not in v.IBAN_LENGTHS:
            return None
        return (start, self._cut(text, start, end) or end)

    def normalize(self, value: str) -> str:
        return value.replace(" ", "").upper()


@register
class Ipv4(Recognizer):
    name = "ipv4"
    entity = "IP_ADDRESS"
    pattern = r"\b(?:\d{1,3}\.){3}\d{1,3}\b"
    prefilter = r"(?:\d{1,3}\.){3}\d{1,3}"
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


@register
class UrlCredentials(Recognizer):
    """The ``user:password`` part of ``scheme://user:password@host``."""

    name = "url_credentials"
    entity = "URL_CREDENTIALS"
    pattern = r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]+:[^\s/@]+@"
    prefilter = r"://[^\s/:@]+:[^\s/@]+@"
    priority = 95

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        s = text.index("://", start, end) + 3
        return ((s, end - 1),)


class _Secret(Recognizer):
    entity = "SECRET"
    priority = 90


@register
class OpenAiStyleKey(_Secret):
    """``sk-...`` keys (OpenAI, project and service-account keys, Anthropic's ``sk-ant-``)."""

    name = "openai_key"
    pattern = r"\bsk-[A-Za-z0-9_\-]{20,}"
    prefilter = r"sk-[A-Za-z0-9_\-]{20,}"

    def validate(self, value: str) -> bool:
        return v.random_token_ok(value[3:], min_len=20)


@register
class AwsAccessKey(_Secret):
    name = "aws_access_key"
    pattern = r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"
    prefilter = r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"


@register
class GithubToken(_Secret):
    name = "github_token"
    pattern = r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})\b"
    prefilter = r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{50}"


@register
class SlackToken(_Secret):
    name = "slack_token"
    pattern = r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"
    prefilter = "xox"


@register
class StripeKey(_Secret):
    name = "stripe_key"
    pattern = r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    prefilter = r"(?:sk|rk)_(?:live|test)_"


@register
class GoogleApiKey(_Secret):
    name = "google_api_key"
    pattern = r"\bAIza[0-9A-Za-z_\-]{35}"
    prefilter = "AIza"


@register
class Jwt(_Secret):
    name = "jwt"
    pattern = r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{8,}"
    prefilter = "eyJ"
    priority = 92

    def validate(self, value: str) -> bool:
        return v.jwt_ok(value)


_AUTH_VALUE = re.compile(r"(?i)(?:bearer|basic|token)\s+")


@register
class BearerToken(_Secret):
    """The credential after ``Bearer``/``Token`` (any opaque token) or ``Basic`` (base64 user:password)."""

    name = "bearer_token"
    pattern = r"\b(?:[Bb]earer|BEARER|[Tt]oken|[Bb]asic)\s+[A-Za-z0-9._~+/\-]{12,}=*"
    prefilter = r"(?:[Bb]earer|BEARER|[Tt]oken|[Bb]asic)\s+[A-Za-z0-9._~+/\-]{12}"

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
    prefilter = "PRIVATE KEY-----"
    priority = 100
    _end = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
    _body = re.compile(r"[A-Za-z0-9+/=\s:\-,]*")

    def accept(self, text: str, start: int, end: int) -> Iterable[Span]:
        m = self._end.search(text, end)
        if m is not None:
            return ((start, m.end()),)
        body = self._body.match(text, end)
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
    prefilter = rf"""(?i)(?:{_ASSIGN_KEYS})["']?\s*[:=]"""
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


__all__ = [
    "RECOGNIZERS",
    "Recognizer",
    "RecognizerOptions",
    "Span",
    "best_windows",
    "context_has",
    "context_verdict",
    "continues_digits",
    "glued",
    "register",
]
