"""Strategies, pseudonym tokens and the key: stable, keyed, refused without a key in production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from driftline.config import ConfigError, load_config
from driftline.config.privacy import PrivacyConfig
from driftline.operators.pii import DEVELOPMENT_KEY, PiiMasker, load_pseudonym_key

KEY = b"test-key-0123456789abcdef"


def mask(text: str, **cfg: object) -> str:
    return PiiMasker.from_config(PrivacyConfig(**cfg), KEY).mask_series(pl.Series([text]))[0]


def test_redact_and_pseudonymize_formats() -> None:
    out = mask("ann@example.com / 4111 1111 1111 1111 / sk-Qw7Er2Ty9Ui4Op1As6Df3Gh8", strategies={"EMAIL": "redact"})
    assert out.startswith("<EMAIL> / <CREDIT_CARD:")
    assert out.endswith("<SECRET>")  # secrets are redacted by default
    token = out.split("<CREDIT_CARD:")[1].split(">")[0]
    assert len(token) == 12 and all(c in "0123456789abcdef" for c in token)


def test_pseudonyms_join_across_spellings_and_rows() -> None:
    m = PiiMasker.from_config(PrivacyConfig(), KEY)
    out = m.mask_series(pl.Series(["Ann@Example.com", "ann@example.com", "4111-1111-1111-1111", "4111 1111 1111 1111", "bob@example.com"])).to_list()
    assert out[0] == out[1]
    assert out[2] == out[3]
    assert out[4] != out[0]


def test_partial_strategy() -> None:
    assert mask("card 4111 1111 1111 1111", strategies={"CREDIT_CARD": "partial"}) == "card **** **** **** 1111"
    assert mask("mail ann.lee@example.com", strategies={"EMAIL": "partial"}) == "mail a***@example.com"


def test_token_length_configurable() -> None:
    out = mask("ann@example.com", token_hex_chars=8)
    assert len(out) == len("<EMAIL:>") + 8


def test_masking_is_idempotent() -> None:
    m = PiiMasker.from_config(PrivacyConfig(), KEY)
    once = m.mask_series(pl.Series(["call +1 415-555-2671, card 4111111111111111, ip 10.1.2.3, mail a@b.io"]))
    assert m.mask_series(once).to_list() == once.to_list()


def test_key_from_env_and_file(tmp_path: Path) -> None:
    cfg = PrivacyConfig()
    assert load_pseudonym_key(cfg, "production", {"DRIFTLINE_PII_KEY": "k" * 16}) == b"k" * 16
    f = tmp_path / "key"
    f.write_bytes(b"file-key-0123456789\n")
    cfg = load_config(None, env={"DRIFTLINE__PRIVACY__KEY_FILE": str(f)})
    assert load_pseudonym_key(cfg.privacy, "production", {}) == b"file-key-0123456789"


def test_production_refuses_without_key() -> None:
    with pytest.raises(ConfigError, match="DRIFTLINE_PII_KEY"):
        load_pseudonym_key(PrivacyConfig(), "production", {})


def test_short_key_and_missing_file_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        load_pseudonym_key(PrivacyConfig(), "development", {"DRIFTLINE_PII_KEY": "short"})
    with pytest.raises(ConfigError, match="privacy.key_file"):
        load_config(None, env={"DRIFTLINE__PRIVACY__KEY_FILE": str(tmp_path / "nope")})


def test_development_falls_back_to_public_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_pseudonym_key(PrivacyConfig(), "development", {}) == DEVELOPMENT_KEY


_SNIPPET = """
import polars as pl
from driftline.config.privacy import PrivacyConfig
from driftline.operators.pii import PiiMasker, load_pseudonym_key
m = PiiMasker.from_config(PrivacyConfig(), load_pseudonym_key(PrivacyConfig(), "production"))
print(m.mask_series(pl.Series(["ann@example.com +1 415-555-2671"]))[0])
print(m.pseudonymize_values(pl.Series(["user-42"]))[0])
"""


def _tokens_in_new_process(key: str) -> str:
    env = {**os.environ, "DRIFTLINE_PII_KEY": key}
    return subprocess.run([sys.executable, "-c", _SNIPPET], env=env, capture_output=True, text=True, check=True, timeout=120).stdout


def test_tokens_equal_across_processes_with_same_key_and_differ_with_another() -> None:
    a = _tokens_in_new_process("same-key-0123456789abcdef")
    b = _tokens_in_new_process("same-key-0123456789abcdef")
    c = _tokens_in_new_process("other-key-0123456789abcdef")
    assert a == b
    assert "<EMAIL:" in a and "<USER_ID:" in a
    assert a.splitlines()[0] != c.splitlines()[0] and a.splitlines()[1] != c.splitlines()[1]
