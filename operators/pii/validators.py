"""Pure checksum and structure validators used by the PII recognizers.

Every function here is side-effect free and works on plain strings, so each is
table-tested on its own.  Recognizers call them only on regex candidates.

>>> luhn_ok("4111 1111 1111 1111"), luhn_ok("4111 1111 1111 1112")
(True, False)
>>> iban_ok("DE89 3704 0044 0532 0130 00"), iban_ok("DE88 3704 0044 0532 0130 00")
(True, False)
>>> ssn_ok("884-08-1501"), ssn_ok("666-45-6789")
(True, False)
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
from collections import Counter

_NON_DIGIT = re.compile(r"\D")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


def digits_of(value: str) -> str:
    """Only the ASCII digits of ``value``, in order."""
    return _NON_DIGIT.sub("", value)


def luhn_ok(value: str) -> bool:
    """True when the digits of ``value`` pass the Luhn (mod 10) check."""
    digits = digits_of(value)
    if len(digits) < 2 or not digits.isascii():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# (prefix range low, prefix range high, allowed lengths): issuer identification ranges
# of the card brands in circulation (Visa, Mastercard, Amex, Discover, JCB, Diners,
# Maestro, UnionPay, RuPay/Mir style 2-series are covered by the Mastercard range).
_CARD_RANGES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # Amex
    ("37", "37", frozenset({15})),
    ("6011", "6011", frozenset({16, 17, 18, 19})),  # Discover
    ("644", "649", frozenset({16, 17, 18, 19})),
    ("65", "65", frozenset({16, 17, 18, 19})),
    ("3500", "3599", frozenset({16, 17, 18, 19})),  # JCB (assigned 3528-3589; the whole 35 block is taken)
    ("1800", "1800", frozenset({15})),  # JCB 15
    ("2131", "2131", frozenset({15})),
    ("300", "305", frozenset({14, 15, 16, 17, 18, 19})),  # Diners
    ("36", "36", frozenset({14, 15, 16, 17, 18, 19})),
    ("38", "39", frozenset({14, 15, 16, 17, 18, 19})),
    ("50", "50", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),  # Maestro
    ("56", "58", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    ("6", "6", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),  # other 6-series (Maestro, UnionPay, RuPay)
    ("0604", "0604", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),  # Maestro (legacy range)
)


def card_brand_ok(digits: str) -> bool:
    """True when ``digits`` starts with a known issuer range and has a length that issuer uses."""
    n = len(digits)
    for low, high, lengths in _CARD_RANGES:
        head = digits[: len(low)]
        if low <= head <= high and n in lengths:
            return True
    return False


_CARD_GROUPS_OK = (
    lambda g: len(g) == 1,
    lambda g: all(x == 1 for x in g),  # one digit at a time
    lambda g: all(x == 4 for x in g[:-1]) and 1 <= g[-1] <= 4,
    lambda g: g in ([4, 6, 5], [4, 6, 4]),
)


_CARD_SEPS = re.compile(r"[ .-]")


def card_ok(value: str) -> bool:
    """A payment card number: 12-19 digits (12 only for Maestro), one kind of separator (space,
    dash or dot) in card-like groups (one group, fours, Amex 4-6-5, or one digit at a time),
    a known issuer range and a valid Luhn digit."""
    seps = {c for c in value if not c.isdigit()}
    if len(seps) > 1 or not seps <= {" ", "-", "."}:
        return False
    groups = [len(g) for g in _CARD_SEPS.split(value)] if seps else [len(value)]
    if 0 in groups or not any(rule(groups) for rule in _CARD_GROUPS_OK):
        return False
    digits = digits_of(value)
    return 12 <= len(digits) <= 19 and card_brand_ok(digits) and luhn_ok(digits)


# IBAN lengths per country (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(value: str) -> bool:
    """An IBAN: known country, that country's length, and ISO 7064 mod-97 remainder 1."""
    compact = _NON_ALNUM.sub("", value).upper()
    if len(compact) < 15 or IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int(rearranged.translate(_BASE36_DIGITS))  # A -> 10 ... Z -> 35
    except ValueError:
        return False
    return number % 97 == 1


_BASE36_DIGITS = {ord(c): str(i) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", start=10)}


def ssn_ok(value: str) -> bool:
    """A US Social Security number in ``AAA-GG-SSSS`` (or space) form that the SSA could issue:
    area not 000, 666 or 900-999; group not 00; serial not 0000; not a famous sample number."""
    seps = {c for c in value if not c.isdigit()}
    if len(seps) > 1:
        return False
    digits = digits_of(value)
    if len(digits) != 9:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    if area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0:
        return False
    return digits not in {"078051120", "219099999", "123456789"}


def ipv4_ok(value: str) -> bool:
    """A dotted-quad IPv4 address (no leading zeros, each octet 0-255)."""
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def ipv6_ok(value: str) -> bool:
    """A textual IPv6 address with at least two non-empty groups (so ``::`` and ``::1`` are not PII)."""
    if value.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    groups = [g for g in value.split(":") if g]
    return len(groups) >= 2 and not (len(groups) == 2 and "::" not in value)


def nanp_ok(value: str) -> bool:
    """A North American (NANP) number as people write it: ``(NXX) NXX-XXXX``, ``NXX-NXX-XXXX``,
    ``NXX.NXX.XXXX``, ``NXX NXX XXXX``, ten digits in a row, optionally led by ``1``.
    Area and exchange codes start with 2-9 (N11 codes are accepted: masking an unassigned
    number costs nothing, missing a real one leaks it)."""
    core = value.strip()
    if not 10 <= sum(c.isdigit() for c in core) <= 11:
        return False
    groups = [g for g in re.split(r"[\s().\-]+", core) if g]
    lens = [len(g) for g in groups]
    if lens and lens[0] == 1:
        if groups[0] != "1":
            return False
        lens, groups = lens[1:], groups[1:]
    if lens not in ([3, 3, 4], [10]):
        return False
    digits = "".join(groups)
    if not digits.isascii() or not digits.isdigit():
        return False
    area, exchange = digits[:3], digits[3:6]
    return area[0] not in "01" and exchange[0] not in "01"


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def random_token_ok(value: str, *, min_len: int = 16, min_entropy: float = 3.0) -> bool:
    """Looks like a machine-generated secret: long enough, mixed letters and digits, high entropy."""
    if len(value) < min_len:
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and shannon_entropy(value) >= min_entropy


def jwt_ok(value: str) -> bool:
    """Three base64url segments whose first decodes to a JSON header naming ``alg`` or ``typ``."""
    parts = value.split(".")
    if len(parts) != 3:
        return False
    head = parts[0]
    try:
        decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    except (ValueError, TypeError):
        return False
    return decoded.startswith(b"{") and (b'"alg"' in decoded or b'"typ"' in decoded)


def basic_auth_ok(value: str) -> bool:
    """Base64 of ``user:password`` as sent in an HTTP Basic authorization header."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (ValueError, TypeError):
        return False
    return b":" in decoded and len(decoded) >= 3


__all__ = [
    "IBAN_LENGTHS",
    "basic_auth_ok",
    "card_brand_ok",
    "card_ok",
    "digits_of",
    "iban_ok",
    "ipv4_ok",
    "ipv6_ok",
    "jwt_ok",
    "looks_like_compact_date",
    "looks_like_date",
    "luhn_ok",
    "nanp_ok",
    "random_token_ok",
    "shannon_entropy",
    "ssn_ok",
]


_DATE_LAYOUTS = (
    re.compile(r"^(?P<y>\d{4})[-./](?P<m>\d{1,2})[-./](?P<d>\d{1,2})$"),
    re.compile(r"^(?P<d>\d{1,2})[-./](?P<m>\d{1,2})[-./](?P<y>\d{2}|\d{4})$"),
    re.compile(r"^(?P<m>\d{1,2})[-./](?P<d>\d{1,2})[-./](?P<y>\d{4})$"),
)


def looks_like_date(value: str) -> bool:
    """True for calendar dates written with ``-``, ``.`` or ``/`` (ISO, European, US order).

    >>> looks_like_date("2026-01-05"), looks_like_date("05.01.2026"), looks_like_date("030-1234567")
    (True, True, False)
    """
    text = value.strip()
    for layout in _DATE_LAYOUTS:
        m = layout.match(text)
        if m and 1 <= int(m["m"]) <= 12 and 1 <= int(m["d"]) <= 31:
            return True
    return False


def looks_like_compact_date(value: str) -> bool:
    """True for an eight-digit ``YYYYMMDD`` date of the years 1900-2099.

    >>> looks_like_compact_date("20260105"), looks_like_compact_date("20261305"), looks_like_compact_date("41555526")
    (True, False, False)
    """
    if len(value) != 8 or not value.isdigit() or value[:2] not in ("19", "20"):
        return False
    return 1 <= int(value[4:6]) <= 12 and 1 <= int(value[6:]) <= 31
