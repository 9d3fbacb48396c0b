"""Configuration of the privacy stage: errors name the bad key and come at start-up."""

from __future__ import annotations

import pytest

from driftline.config import ConfigError, load_config
from driftline.config.privacy import PrivacyConfig
from driftline.operators.pii import PiiMasker

KEY = b"test-key-0123456789abcdef"


def test_bad_rule_regex_fails_at_load_naming_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"privacy.dlp_rules\[0\].pattern"):
        load_config(None, env={}, overrides={"privacy": {"dlp_rules": [{"name": "x", "pattern": "(?<=a)b", "action": "warn"}]}})


def test_rule_needs_exactly_one_matcher() -> None:
    with pytest.raises(ConfigError, match="exactly one of pattern or keywords"):
        load_config(None, env={}, overrides={"privacy": {"dlp_rules": [{"name": "x", "action": "warn"}]}})


def test_unknown_key_refused() -> None:
    with pytest.raises(ConfigError, match="privacy.nonsense"):
        load_config(None, env={}, overrides={"privacy": {"nonsense": 1}})


def test_env_override_of_strategy() -> None:
    cfg = load_config(None, env={"DRIFTLINE__PRIVACY__DEFAULT_STRATEGY": "redact"})
    assert cfg.privacy.strategy_for("EMAIL") == "redact"


def test_unknown_entity_and_recognizer_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="'EMAILS'"):
        PiiMasker.from_config(PrivacyConfig(strategies={"EMAILS": "redact"}), KEY)
    with pytest.raises(ConfigError, match="privacy.disabled_recognizers"):
        PiiMasker.from_config(PrivacyConfig(disabled_recognizers=["phonez"]), KEY)


def test_unknown_phone_region_refused() -> None:
    with pytest.raises(ConfigError, match="phone_regions"):
        load_config(None, env={}, overrides={"privacy": {"phone_regions": ["ZZ"]}})


def test_person_model_missing_fails_clearly() -> None:
    """With spaCy installed a missing model names privacy.person.model; without spaCy the
    error names privacy.person.enabled.  Either way start-up fails with a clear message."""
    try:
        import spacy  # noqa: F401

        expected = "privacy.person.model"
    except ImportError:
        expected = "privacy.person.enabled: spaCy is not installed"
    with pytest.raises(ConfigError, match=expected):
        PiiMasker.from_config(PrivacyConfig(person={"enabled": True, "model": "no_such_spacy_model_xyz"}), KEY)


def test_custom_recognizer_adds_entity() -> None:
    cfg = PrivacyConfig(custom_recognizers=[{"name": "employee_id", "entity": "EMPLOYEE_ID", "pattern": r"\bEMP-\d{6}\b"}], strategies={"EMPLOYEE_ID": "redact"})
    m = PiiMasker.from_config(cfg, KEY)
    assert "EMPLOYEE_ID" in m.entities
    import polars as pl

    assert m.mask_series(pl.Series(["badge EMP-123456"]))[0] == "badge <EMPLOYEE_ID>"
