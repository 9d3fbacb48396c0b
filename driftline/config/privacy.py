"""Configuration section ``privacy``: PII detection, masking, classification and DLP rules.

>>> cfg = PrivacyConfig(strategies={"EMAIL": "redact"})
>>> cfg.strategy_for("EMAIL"), cfg.strategy_for("PHONE"), cfg.strategy_for("SECRET")
('redact', 'pseudonymize', 'redact')
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from driftline.config.secrets import env_secret

Strategy = Literal["redact", "pseudonymize", "partial", "drop"]
Level = Literal["public", "internal", "confidential", "restricted"]
Action = Literal["block", "mask", "warn", "route_local"]
Severity = Literal["low", "medium", "high", "critical"]

#: Pseudonymization keys published in this repository (docker-compose.yml's default);
#: production mode refuses them.
SAMPLE_KEYS: tuple[str, ...] = ("change-me-development-only",)

#: Ordered from least to most sensitive.
LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
#: Classification implied by a rule's severity when the rule names none.
SEVERITY_LEVELS: dict[str, str] = {"low": "internal", "medium": "internal", "high": "confidential", "critical": "restricted"}

_ENTITY = re.compile(r"[A-Z][A-Z0-9_]*")
_RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]*")


def check_rust_regex(pattern: str) -> None:
    """Raise ``ValueError`` when ``pattern`` is not valid for Polars' (Rust) regex engine
    or for Python's :mod:`re` (both read it: Polars to find candidate rows, Python to locate spans)."""
    import polars as pl

    try:
        pl.Series([""], dtype=pl.Utf8).str.contains(pattern)
    except Exception as exc:  # polars raises ComputeError with the regex crate's message
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r} for Python: {exc}") from None


class DlpRule(BaseModel):
    """A data-loss-prevention rule: a regex ``pattern`` or whole-word ``keywords`` (case-insensitive)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Rule name (lower case, digits, _ . -); recorded in dlp_rules and the audit.")
    pattern: str | None = Field(None, description="Regular expression (common subset of Rust and Python syntax).")
    keywords: list[str] = Field(default_factory=list, description="Words or phrases matched whole-word, case-insensitively.")
    action: Action = Field(..., description="block refuses the record; mask replaces the matches with <DLP:name>; warn only records it; route_local restricts it to local models.")
    severity: Severity = Field("medium", description="low, medium, high or critical.")
    classification: Level | None = Field(None, description="Level the record gets when the rule fires; default from severity (low/medium internal, high confidential, critical restricted).")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _RULE_NAME.fullmatch(value):
            raise ValueError(f"rule name {value!r} must match {_RULE_NAME.pattern}")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            check_rust_regex(value)
        return value

    @model_validator(mode="after")
    def _one_matcher(self) -> DlpRule:
        if (self.pattern is None) == (not self.keywords):
            raise ValueError(f"rule {self.name!r} needs exactly one of pattern or keywords")
        if self.action == "mask" and self.pattern is None:
            raise ValueError(f"rule {self.name!r}: action mask needs a pattern")
        return self

    @property
    def level(self) -> str:
        return self.classification or SEVERITY_LEVELS[self.severity]

    def regex(self) -> str:
        """The rule as one regular expression."""
        if self.pattern is not None:
            return self.pattern
        words = "|".join(re.escape(k.strip()) for k in self.keywords if k.strip())
        return rf"(?i)\b(?:{words})\b"


class CustomRecognizer(BaseModel):
    """A pattern-only recognizer declared in configuration (no validator)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Recognizer name, lower_snake_case, unique.")
    entity: str = Field(..., description="Entity type it reports, UPPER_SNAKE_CASE (gets its own pii_<entity> column).")
    pattern: str = Field(..., description="Regular expression (common subset of Rust and Python syntax).")
    priority: int = Field(50, ge=0, le=1000, description="Higher wins when spans overlap.")

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        if not _ENTITY.fullmatch(value):
            raise ValueError(f"entity {value!r} must be UPPER_SNAKE_CASE")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        check_rust_regex(value)
        return value


class PersonConfig(BaseModel):
    """Optional PERSON-name detection with a spaCy NER pipeline (off by default)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Also detect PERSON names with a spaCy NER pipeline (the default person_context recognizer finds names by context offline).")
    model: str = Field("en_core_web_sm", description="Installed spaCy package name or pipeline directory; loaded once at start-up.")
    labels: list[str] = Field(default_factory=lambda: ["PERSON", "PER"], description="NER labels reported as PERSON.")


def _default_rules() -> list[DlpRule]:
    return [
        DlpRule(name="medical_local", keywords=["diagnosis", "prescription", "patient", "medical record"], action="route_local", severity="high"),
        DlpRule(name="confidential_marker", keywords=["confidential", "internal only", "proprietary"], action="warn", severity="high"),
    ]


def _recognizer_options():  # type: ignore[no-untyped-def]
    from driftline.operators.pii.recognizers import RecognizerOptions

    return RecognizerOptions()


def entity_defaults() -> dict[str, tuple[str, str | None]]:
    """Entity type -> (default classification level, default strategy or None for
    ``default_strategy``), in column order, from the registered recognizers: an entity is
    declared by the recognizer class that reports it (``operators/pii/recognizers.py``)."""
    from driftline.operators.pii.recognizers import entity_defaults as registered

    return registered()


def entity_names() -> tuple[str, ...]:
    """Entity types of the registered recognizers, in the order of their ``pii_<type>`` columns."""
    return tuple(entity_defaults())


class BudgetConfig(BaseModel):
    """Per-record limits of the privacy stage: a record over one is refused with a reason
    instead of holding the flow (see docs/privacy.md).  All are counts, checked up front
    with vectorized operations, never timings: a refusal must be the same on replay."""

    model_config = ConfigDict(extra="forbid")

    max_chars: int = Field(65_536, ge=1_024, le=16_777_216, description="Longest string scanned (text, an attribute key or value, an id); a longer one is cut to this many characters and its record refused (pii_budget:too_long). Refused texts are stored cut and masked.")
    max_attributes: int = Field(1_000, ge=1, description="Most attributes a record may carry; more and it is refused (pii_budget:too_many_attributes).")
    max_candidates: int = Field(256, ge=10, description="Most PII candidate matches one string may have; more and its record is refused (pii_budget:too_many_candidates) without validating them, and its strings are not stored. With max_chars this bounds the work per record; the budget is counted, not timed, so a replay after a crash refuses the same records.")


class PrivacyConfig(BaseModel):
    """Settings of the privacy stage (masking runs before features, models and every sink)."""

    model_config = ConfigDict(extra="forbid")

    disabled_recognizers: list[str] = Field(default_factory=list, description="Names of built-in recognizers to switch off (see docs/privacy.md).")
    custom_recognizers: list[CustomRecognizer] = Field(default_factory=list, description="Extra pattern recognizers.")
    default_strategy: Strategy = Field("pseudonymize", description="Masking strategy for entity types not listed in strategies.")
    strategies: dict[str, Strategy] = Field(
        default_factory=dict,
        description="Masking strategy per entity type, over the built-ins (SECRET and URL_CREDENTIALS: redact): redact (<TYPE>), pseudonymize (<TYPE:hmac>), partial (keep the last partial_keep characters), drop (refuse the record).",
    )
    partial_keep: int = Field(4, ge=0, le=8, description="Characters (letters/digits) the partial strategy leaves visible at the end.")
    token_hex_chars: int = Field(12, ge=8, le=64, description="Hex characters of HMAC-SHA256 kept in a pseudonym token (12 = 48 bits).")
    key: SecretStr | None = Field(None, description="Pseudonymization (HMAC) key, at least 16 bytes (secret: $DRIFTLINE__PRIVACY__KEY, ..._FILE, privacy.key_file or $<key_env>).")
    key_env: str = Field("DRIFTLINE_PII_KEY", description="Environment variable holding the pseudonymization key when privacy.key is not set otherwise.")
    pseudonymize_user_id: bool = Field(True, description="Replace user_id with <USER_ID:hmac> (same key and scheme as text tokens).")
    mask_attributes: bool = Field(True, description="Mask the values of event attributes like text.")
    mask_dead_letter: bool = Field(False, description="Mask the original payload bytes written to the dead-letter topic (they are then no longer byte-exact for replay).")
    phone_regions: list[str] = Field(default_factory=list, description="ISO regions (e.g. DE, FR) whose national layouts are also checked with phonenumbers; phones are found by layout and context without them (see docs/privacy.md).")
    phone_reject_context: list[str] = Field(
        default_factory=lambda: list(_recognizer_options().phone_reject_context),
        description="Words that, among the words right before a number in the same clause, mark it as not a phone or card number (the nearer of these and a phone/card word such as 'call' or 'card' decides): order, invoice, tracking, date, version...",
    )
    default_level: Level = Field("internal", description="Classification of a record with no findings and no fired rule.")
    source_levels: dict[str, Level] = Field(default_factory=dict, description="Base classification per event source (overrides default_level).")
    entity_levels: dict[str, Level] = Field(
        default_factory=dict,
        description="Classification implied by each entity type found, over each entity's registered level (EMAIL, PHONE, IP_ADDRESS, PERSON: confidential; CREDIT_CARD, US_SSN, IBAN, SECRET, URL_CREDENTIALS: restricted; custom: confidential).",
    )
    route_local_at: Level | None = Field("restricted", description="Records at or above this level are marked route_local (null: only route_local rules do).")
    dlp_rules: list[DlpRule] = Field(default_factory=_default_rules, description="DLP rules (pattern or keywords; action block, mask, warn or route_local; severity).")
    person: PersonConfig = Field(default_factory=PersonConfig)
    identifiers: Literal["mask", "refuse"] = Field(
        "mask", description="PII found in event_id, source, tenant or an attribute key: mask it in place, or refuse the record (pii_in_identifier:<field>); either way it is never stored raw."
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @field_validator("strategies", "entity_levels")
    @classmethod
    def _entity_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENTITY.fullmatch(key):
                raise ValueError(f"entity type {key!r} must be UPPER_SNAKE_CASE")
        return value

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        import phonenumbers

        known = phonenumbers.SUPPORTED_REGIONS
        for region in value:
            if region.upper() not in known:
                raise ValueError(f"unknown phone region {region!r}")
        return [r.upper() for r in value]

    @model_validator(mode="after")
    def _key_from_env(self, info: ValidationInfo) -> PrivacyConfig:
        if self.key is None:
            self.key = env_secret(info, self.key_env)
        return self

    @model_validator(mode="after")
    def _unique_rules(self) -> PrivacyConfig:
        names = [r.name for r in self.dlp_rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"dlp_rules: duplicate rule names {sorted(dup)}")
        return self

    def strategy_for(self, entity: str) -> str:
        """The masking strategy for ``entity``: configured, else the entity's registered default, else ``default_strategy``."""
        return self.strategies.get(entity) or entity_defaults().get(entity, ("", None))[1] or self.default_strategy

    def level_for(self, entity: str) -> str:
        """The classification implied by finding ``entity``: configured, else its registered level, else confidential."""
        return self.entity_levels.get(entity) or entity_defaults().get(entity, ("confidential", None))[0]


__all__ = ["LEVELS", "SAMPLE_KEYS", "SEVERITY_LEVELS", "BudgetConfig", "CustomRecognizer", "DlpRule", "PersonConfig", "PrivacyConfig", "check_rust_regex", "entity_defaults", "entity_names"]
