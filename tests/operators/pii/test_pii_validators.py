"""Table tests of the pure checksum and structure validators."""

from __future__ import annotations

import pytest

from driftline.operators.pii import validators as v


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("4111111111111111", True),
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("378282246310005", True),  # Amex
        ("6011111111111117", True),  # Discover
        ("4111111111111112", False),  # last digit off
        ("0", False),
        ("", False),
        ("79927398713", True),  # textbook Luhn example
        ("79927398710", False),
    ],
)
def test_luhn(value: str, ok: bool) -> None:
    assert v.luhn_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("3782 822463 10005", True),  # Amex 4-6-5
        ("5555555555554444", True),
        ("6759 6498 2648", True),  # 12-digit Maestro, Luhn-valid
        ("4111 1111-1111 1111", False),  # mixed separators
        ("41 11 11 11 11 11 11 11", False),  # not card grouping
        ("9111111111111111", False),  # no issuer starts with 9
        ("4111111111111112", False),  # bad Luhn
        ("411111111111", False),  # 12 digits only allowed for Maestro
        ("4111111111111111111111", False),  # too long
    ],
)
def test_card(value: str, ok: bool) -> None:
    assert v.card_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("DE89370400440532013000", True),
        ("DE89 3704 0044 0532 0130 00", True),
        ("GB82 WEST 1234 5698 7654 32", True),
        ("FR1420041010050500013M02606", True),
        ("NL91ABNA0417164300", True),
        ("DE88370400440532013000", False),  # checksum off
        ("DE8937040044053201300", False),  # one character short for DE
        ("XX89370400440532013000", False),  # unknown country
        ("DEAB370400440532013000", False),  # check digits not digits
    ],
)
def test_iban(value: str, ok: bool) -> None:
    assert v.iban_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("884-08-1501", True),
        ("884 08 1501", True),
        ("000-12-3456", False),  # area 000
        ("666-12-3456", False),  # area 666
        ("900-12-3456", False),  # area 9xx
        ("123-00-4567", False),  # group 00
        ("123-45-0000", False),  # serial 0000
        ("078-05-1120", False),  # the Woolworth wallet number
        ("884-08 1501", False),  # mixed separators
    ],
)
def test_ssn(value: str, ok: bool) -> None:
    assert v.ssn_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("192.168.1.1", True), ("8.8.8.8", True), ("256.1.1.1", False), ("1.2.3", False), ("01.2.3.4", False)],
)
def test_ipv4(value: str, ok: bool) -> None:
    assert v.ipv4_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2001:db8::1", True),
        ("fe80::1ff:fe23:4567:890a", True),
        ("d9ed:17e3:cc0e:95ee:8d10:3ed4:cc66:7e97", True),
        ("::1", False),  # loopback: not personal
        ("::", False),
        ("12:30:45", False),  # a time
        ("00:1B:44:11:3A:B7", False),  # a MAC address
    ],
)
def test_ipv6(value: str, ok: bool) -> None:
    assert v.ipv6_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("(415) 555-2671", True),
        ("415-555-2671", True),
        ("415.555.2671", True),
        ("1-415-555-2671", True),
        ("4155552671", True),
        ("115-555-2671", False),  # area code cannot start with 1
        ("415-155-2671", False),  # exchange cannot start with 1
        ("2024-03-15", False),  # a date
        ("1.2.3", False),
        ("41-5555-2671", False),
    ],
)
def test_nanp(value: str, ok: bool) -> None:
    assert v.nanp_ok(value) is ok


def test_jwt_and_basic_auth() -> None:
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert v.jwt_ok(jwt)
    assert not v.jwt_ok("eyJub3RhIjoiand0In0.eyJ4IjoxfQ.abcdefghij")  # header has no alg/typ
    assert v.basic_auth_ok("dXNlcjpwYXNzd29yZA==")  # user:password
    assert not v.basic_auth_ok("aGVsbG8gd29ybGQ=")  # "hello world": no colon


def test_random_token() -> None:
    assert v.random_token_ok("a8F3kq9ZpL2mX7vB4nC1")
    assert not v.random_token_ok("learn-is-a-great-library-for-ml")  # no digit
    assert not v.random_token_ok("short1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-05", True),
        ("2026/12/31", True),
        ("05.01.2026", True),
        ("31/12/26", True),
        ("12-31-2026", True),
        ("2026-13-05", False),
        ("2026-01-32", False),
        ("030-1234567", False),
        ("0327995662", False),
        ("27 9371-9603", False),
    ],
)
def test_looks_like_date(value: str, expected: bool) -> None:
    assert v.looks_like_date(value) is expected
