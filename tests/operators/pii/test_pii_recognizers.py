"""Recognizers: real PII is found (with the right span), look-alikes are not."""

from __future__ import annotations

import re

import polars as pl
import pytest

from driftline.operators.pii.recognizers import RECOGNIZERS, Recognizer, RecognizerOptions, register


def found(name: str, text: str, options: RecognizerOptions | None = None) -> list[str]:
    rec = RECOGNIZERS[name](options)
    return [text[s:e] for s, e in rec.find(text)]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("email", "write to ann.lee+x@mail.example.co.uk today", ["ann.lee+x@mail.example.co.uk"]),
        ("email", "no..dots@example.com", []),
        ("phone", "call (591)341-7776 now", ["(591)341-7776"]),
        ("phone", "call 206.269.0743x9150", ["206.269.0743x9150"]),
        ("phone", "on +49 (0) 9141 777631 after 5", ["+49 (0) 9141 777631"]),
        ("phone", "tel:+33 1 83 41 77 76 2 times", ["+33 1 83 41 77 76"]),
        ("phone", "my number 4155552671", ["4155552671"]),
        ("phone", "order number 4155552671", []),  # an order number, not a phone
        ("phone", "on 2024-03-15 at 10:30", []),
        ("phone", "version 10.0.19045.2965", []),
        ("phone", "Order #4155552671", []),
        ("phone", "ORD-415-555-2671", []),
        ("phone", "550e8400-e29b-41d4-a716-446655440000", []),
        ("phone", "price $1,299.99 or 1299.99", []),
        ("credit_card", "card 4111 1111 1111 1111 please", ["4111 1111 1111 1111"]),
        ("credit_card", "card 4111-1111-1111-1111.", ["4111-1111-1111-1111"]),
        ("credit_card", "card 4111111111111111", ["4111111111111111"]),
        ("credit_card", "card 4111 1111 1111 1111 2031 exp", ["4111 1111 1111 1111"]),
        ("credit_card", "acct 12 4111 1111 1111 1111", []),  # tail of a longer digit run: not reported alone
        ("credit_card", "bad 4111 1111 1111 1112", []),
        ("credit_card", "tracking 9400 1000 0000 0000 0000 00", []),
        ("credit_card", "tracking number 676320573170", []),  # Luhn-valid digits after tracking words
        ("us_ssn", "SSN 884-08-1501.", ["884-08-1501"]),
        ("us_ssn", "SSN 666-08-1501", []),
        ("us_ssn", "id A884-08-1501", []),
        ("iban", "IBAN DE89 3704 0044 0532 0130 00 please", ["DE89 3704 0044 0532 0130 00"]),
        ("iban", "IBAN DE89370400440532013000", ["DE89370400440532013000"]),
        ("iban", "IBAN DE88 3704 0044 0532 0130 00", []),
        ("ipv4", "from 203.0.113.9:8443", ["203.0.113.9"]),
        ("ipv4", "version 1.2.3.4", []),
        ("ipv4", "build 10.0.19045.2965", []),
        ("ipv6", "from 2001:db8::1.", ["2001:db8::1"]),
        ("ipv6", "at 12:30:45 and std::vector", []),
        ("url_credentials", "postgres://admin:hunter22@db.example.com/x", ["admin:hunter22"]),
        ("openai_key", "key sk-proj-AbC123dEf456GhI789jKl0mn", ["sk-proj-AbC123dEf456GhI789jKl0mn"]),
        ("openai_key", "we use sk-learn-models-for-everything", []),
        ("aws_access_key", "AKIAIOSFODNN7EXAMPLE", ["AKIAIOSFODNN7EXAMPLE"]),
        ("github_token", "ghp_" + "a1B2" * 9, ["ghp_" + "a1B2" * 9]),
        ("bearer_token", "Authorization: Bearer abcDEF123456ghiJKL", ["abcDEF123456ghiJKL"]),
        ("bearer_token", "Authorization: Basic dXNlcjpwYXNzd29yZA==", ["dXNlcjpwYXNzd29yZA=="]),
        ("bearer_token", "the token expired yesterday evening", []),
        ("password_assignment", 'db_password: "s3cr3t!" next', ["s3cr3t!"]),
        ("password_assignment", "spring.datasource.password=hunter22.", ["hunter22"]),
        ("password_assignment", '{"api_key": "abc123xyz"}', ["abc123xyz"]),
        ("password_assignment", "password: ********", []),
        ("password_assignment", "the password is hunter2", []),
    ],
)
def test_recognizer(name: str, text: str, expected: list[str]) -> None:
    assert found(name, text) == expected


def test_private_key_block_and_truncated_block() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbCd==\n-----END RSA PRIVATE KEY-----"
    assert found("private_key", f"key:\n{block}\nthanks") == [block]
    truncated = "-----BEGIN PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nAbCd"
    assert found("private_key", truncated + "   ") == [truncated + "   "]


def test_jwt() -> None:
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert found("jwt", f"cookie {jwt} ok") == [jwt]


def test_national_phone_layouts_found_with_and_without_configured_regions() -> None:
    """Issue 12: a national layout with its trunk 0 is a phone whether or not its region is
    configured (it used to need privacy.phone_regions, and leaked otherwise)."""
    text = "ruf an: 030 12345678"
    assert found("phone", text) == ["030 12345678"]
    assert found("phone", text, RecognizerOptions(phone_regions=("DE",))) == ["030 12345678"]


REGIONS = RecognizerOptions(phone_regions=("US", "DE", "FR", "ES", "IT", "BR", "NL"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rappelez-moi au 0327995662.", ["0327995662"]),  # bare national number with trunk 0
        ("Me liguem no 27 9371-9603.", ["27 9371-9603"]),  # Brazilian area code, no trunk 0
        ("Richiamatemi al 350906116.", ["350906116"]),  # valid Italian mobile, bare
        ("Bel mij terug op 0088-408361.", ["0088-408361"]),  # 00 that is not an international prefix
        ("Rufen Sie mich unter (03263) 917177 zurück.", ["(03263) 917177"]),
        ("Die Bestellung A524917 kostet 412.02 Euro.", []),  # order number and price stay
        ("order 0327995662 shipped", []),  # a bare digit run after 'order' is not a phone
        ("version 1.2.3 released 2026-01-05", []),
    ],
)
def test_national_phone_layouts_of_configured_regions(text: str, expected: list[str]) -> None:
    assert found("phone", text, REGIONS) == expected


SAMPLES = [
    "mail ann@example.com, call +1 415-555-2671 or (591)341-7776",
    "card 4111 1111 1111 1111 ssn 884-08-1501 iban DE89 3704 0044 0532 0130 00",
    "ip 203.0.113.9 2001:db8::1 postgres://a:b@h sk-" + "aB3" * 8,
    "AKIAIOSFODNN7EXAMPLE ghp_" + "a1B2" * 9 + " Bearer abcDEF123456ghiJKL",
    'password="x1y2z3" -----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----',
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijkl xoxb-1234567890-abc AIza" + "x" * 35,
    "nothing here at all, version 1.2.3 on 2024-03-15",
    "Ünïcödé ＠ text ４１１１ and ٤١١١ digits",
]


@pytest.mark.parametrize("name", sorted(RECOGNIZERS))
def test_prefilter_covers_pattern(name: str) -> None:
    """Polars' prefilter must flag every row the Python pattern matches, or PII would be skipped."""
    rec = RECOGNIZERS[name](None)
    flagged = pl.Series(SAMPLES).str.contains(rec.candidate_pattern).to_list()
    compiled = rec.compiled()
    for text, flag in zip(SAMPLES, flagged):
        if compiled.search(text):
            assert flag, f"{name}: prefilter misses {text!r}"


def test_registering_a_recognizer_is_one_class() -> None:
    @register
    class EmployeeId(Recognizer):
        name = "test_employee_id"
        entity = "EMPLOYEE_ID"
        pattern = r"\bEMP-\d{6}\b"

    try:
        assert found("test_employee_id", "badge EMP-123456 lost") == ["EMP-123456"]
    finally:
        del RECOGNIZERS["test_employee_id"]


def test_register_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):

        @register
        class Bad(Recognizer):
            name = "bad_entity"
            entity = "lower"
            pattern = "x"


def test_patterns_compile_in_python() -> None:
    for name, cls in RECOGNIZERS.items():
        re.compile(cls.pattern)


def _within_samples() -> list[str]:
    """Strings over the characters the digit recognizers read (digits, their separators,
    letters and brackets), random (seeded) plus the hand-written samples."""
    import random

    rnd = random.Random(7)
    alphabet = "0123456789" * 3 + " .-/():+x_a"
    out = list(SAMPLES)
    for _ in range(10_000):
        out.append("".join(rnd.choice(alphabet) for _ in range(rnd.randint(6, 40))))
    for _ in range(10_000):  # groups of digits and separators, as numbers are written
        groups = ["".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 4))) for _ in range(rnd.randint(2, 8))]
        seps = rnd.choice([".", " ", "-", ". ", ".-", ["", " ", ".", "-", "/", "(", ")", ":", "  ", "a", ". "]])
        out.append("".join(g + rnd.choice(seps) for g in groups))
    out += ["1.2.3.4", "123-45-6789", "123 45 6789", "4111.1111.1111.1111", "411111111111", "1-2-3-4-5-6-7-8-9-0-1-2", "10.0.0.1:8080"]
    return out


@pytest.mark.parametrize("name", sorted(n for n, c in RECOGNIZERS.items() if c.prefilter_within))
def test_prefilter_within_is_a_superset(name: str) -> None:
    """A recognizer whose prefilter is declared ``prefilter_within`` another is only tested on
    the strings that one flags: every match of its prefilter must also match that one (or a
    candidate, hence PII, would be lost)."""
    rec = RECOGNIZERS[name](None)
    gate = RECOGNIZERS[rec.prefilter_within](None)
    assert not rec.prefilter_literals and not gate.prefilter_literals
    own, outer = re.compile(rec.candidate_pattern), re.compile(gate.candidate_pattern)
    hits = 0
    for text in _within_samples():
        for m in own.finditer(text):
            hits += 1
            assert outer.search(m.group()), f"{name}: {m.group()!r} matches its prefilter but not {gate.name}'s"
    assert hits > 100  # the samples do exercise the prefilter
    # And as Polars runs them (Rust regex): every string flagged by the inner one is flagged by the outer one.
    s = pl.Series(_within_samples())
    inner_flags, outer_flags = s.str.contains(rec.candidate_pattern), s.str.contains(gate.candidate_pattern)
    assert not (inner_flags & ~outer_flags).any()


def test_literal_alternation_reads_like_the_masker_literal_search() -> None:
    """The masker's first test is a regex holding every literal prefilter as
    :func:`literal_alternation`; its literal prefilters run as Aho-Corasick
    (``contains_any``, ASCII case-insensitive).  Both must flag the same strings, or a
    string could skip its literal prefilters."""
    from driftline.operators.pii.recognizers import literal_alternation

    literals = sorted({w for c in RECOGNIZERS.values() for w in c.prefilter_literals})
    texts = [*SAMPLES, *literals, *(w.upper() for w in literals), *(w.title() for w in literals), *(w[:-1] for w in literals), "Kä @ X", "PRİVATE KEY-----", "toKEN", "ſk-", "bEaReR"]
    s = pl.Series(texts)
    regex = s.str.contains(literal_alternation(literals))
    ac = s.str.contains_any(literals, ascii_case_insensitive=True)
    assert regex.to_list() == ac.to_list()
