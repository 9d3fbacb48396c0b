"""Configuration section ``features``: which features are computed and how.

Every feature kind of :mod:`driftline.operators.features` reads its parameters from
here, and input sanitization for model calls (:mod:`driftline.operators.sanitize`)
reads ``features.sanitize``.  All defaults are documented on the fields and in
``docs/features.md``.

>>> cfg = FeaturesConfig()
>>> cfg.text_stats.tokenizer, cfg.language.detector
('estimate', 'cld2')
>>> sorted({p.family for p in cfg.injection.patterns})[:3]
['code_injection', 'instruction_override', 'role_injection']
"""

from __future__ import annotations

import re
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from driftline.config.privacy import entity_names

Severity = Literal["low", "medium", "high", "critical"]
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} must be lower snake_case (letters, digits, underscores, starting with a letter)")
    return value


def compile_loose(pattern: str) -> re.Pattern[str]:
    """Compile an injection pattern the way the engine matches it.

    Matching is case-insensitive, and every literal space in the pattern matches any
    run of white space (``"ignore previous"`` also matches ``"IGNORE \\n  previous"``).
    Raises ``re.error`` on a bad expression.
    """
    return re.compile(loosen(pattern), re.IGNORECASE)


def loosen(pattern: str, *, ascii_word_boundary: bool = False) -> str:
    """Replace each unescaped literal space in ``pattern`` by ``\\s+`` (``" ?"`` and ``" *"`` by ``\\s*``).

    With ``ascii_word_boundary`` every ``\\b`` becomes ``(?-u:\\b)`` (Rust regex syntax): an
    ASCII word boundary keeps the engine on its fast automaton for non-ASCII text
    (measured 40 us -> 1 us per event for the default pattern set).
    """
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append(r"(?-u:\b)" if ascii_word_boundary and pair == r"\b" and not in_class else pair)
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        if ch == " " and not in_class:
            j = i
            while j < len(pattern) and pattern[j] == " ":
                j += 1
            if j < len(pattern) and pattern[j] in "?*":  # "a ?b": optional white space
                out.append(r"\s*")
                j += 1
            else:
                out.append(r"\s+")
                if j < len(pattern) and pattern[j] == "+":
                    j += 1
            i = j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class TextStatsConfig(BaseModel):
    """Text statistics: ``f_chars``, ``f_words``, ``f_sentences``, ``f_tokens_est``,
    ``f_digit_share``, ``f_upper_share``, ``f_url_count``, ``f_exclaim_count``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Compute the text statistics.")
    tokenizer: Literal["estimate", "cl100k_base", "o200k_base"] = Field(
        "estimate",
        description=(
            "How f_tokens_est is computed. 'estimate' is a vectorized formula over character, word and "
            "punctuation counts (about 0.2 us/event, mean absolute error about 10% against cl100k_base on "
            "the producer's texts, see docs/features.md); 'cl100k_base'/'o200k_base' count exact BPE tokens "
            "with the offline vocabularies shipped by the bpe-openai package (several us/event)."
        ),
    )
    char_weight: float = Field(0.24, ge=0, description="Estimate: tokens per character (fitted on the producer's texts vs cl100k_base).")
    punct_weight: float = Field(0.96, ge=0, description="Estimate: extra tokens per punctuation or symbol character.")
    digit_weight: float = Field(0.27, ge=0, description="Estimate: extra tokens per digit (BPE splits numbers into groups of up to 3).")


class LanguageConfig(BaseModel):
    """Language detection: ``f_lang`` (ISO 639-1 code or ``und``) and ``f_lang_conf`` in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Detect the language of each text.")
    detector: Literal["cld2", "lingua_low", "lingua_high"] = Field(
        "cld2",
        description=(
            "Offline detector. 'cld2' (pycld2, chosen by bench/bench_langdetect.py: fastest and >= 95% "
            "accurate at >= 50 chars), 'lingua_low' (lingua low-accuracy mode), 'lingua_high' (lingua "
            "high accuracy, slow)."
        ),
    )
    languages: list[str] = Field(
        default_factory=lambda: ["en", "de", "fr", "es", "it", "pt", "nl"],
        min_length=1,
        description="ISO 639-1 codes the detector may answer; anything else is reported as 'und'.",
    )
    min_chars: int = Field(
        12, ge=0, description="Texts shorter than this many characters get f_lang='und' and f_lang_conf=0 without detection."
    )

    @field_validator("languages")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        for code in v:
            if not re.fullmatch(r"[a-z]{2}", code):
                raise ValueError(f"language code {code!r} is not a lower-case ISO 639-1 code")
        return v


class CategoricalFeature(BaseModel):
    """Map a column or an attribute to an integer code, with a default for unknown or missing values."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Output column name (lower snake_case; the column is 'f_' + name).")
    column: str | None = Field(None, description="Event column to read (e.g. 'source'); give this or 'attribute'.")
    attribute: str | None = Field(None, description="Key of the event's attributes map to read; give this or 'column'.")
    mapping: dict[str, int] = Field(min_length=1, description="Value -> code. Matching is exact (case-sensitive).")
    default: int = Field(-1, description="Code for values not in the mapping and for missing values.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "feature name")

    @model_validator(mode="after")
    def _one_input(self) -> CategoricalFeature:
        if (self.column is None) == (self.attribute is None):
            raise ValueError(f"categorical feature {self.name!r}: give exactly one of 'column' or 'attribute'")
        return self


class BinningFeature(BaseModel):
    """Place a numeric column or attribute into configured bins; the output is the bin label."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Output column name (lower snake_case; the column is 'f_' + name).")
    column: str | None = Field(None, description="Numeric event column to read; give this or 'attribute'.")
    attribute: str | None = Field(None, description="Attribute key whose value is parsed as a number; give this or 'column'.")
    edges: list[float] = Field(
        min_length=1,
        description="Strictly increasing bin edges. A value v goes to bin i where edges[i-1] <= v < edges[i] (left-closed).",
    )
    labels: list[str] | None = Field(
        None, description="One label per bin (len(edges) + 1). Default: 'lt_<e0>', '<e0>_<e1>', ..., 'ge_<last>'."
    )
    missing_label: str = Field("missing", description="Label for missing or non-numeric values.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "feature name")

    @model_validator(mode="after")
    def _check(self) -> BinningFeature:
        if (self.column is None) == (self.attribute is None):
            raise ValueError(f"binning feature {self.name!r}: give exactly one of 'column' or 'attribute'")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"binning feature {self.name!r}: edges must be strictly increasing, got {self.edges}")
        if self.labels is not None and len(self.labels) != len(self.edges) + 1:
            raise ValueError(
                f"binning feature {self.name!r}: labels needs len(edges) + 1 = {len(self.edges) + 1} entries, got {len(self.labels)}"
            )
        return self

    def bin_labels(self) -> list[str]:
        """The label of each bin, generated when none are configured."""
        if self.labels is not None:
            return list(self.labels)

        def fmt(x: float) -> str:
            return f"{x:g}"

        out = [f"lt_{fmt(self.edges[0])}"]
        out += [f"{fmt(a)}_{fmt(b)}" for a, b in zip(self.edges, self.edges[1:])]
        out.append(f"ge_{fmt(self.edges[-1])}")
        return out


_POSITIVE = [
    "good", "great", "excellent", "love", "loved", "happy", "thanks", "thank", "perfect", "amazing", "helpful",
    "fast", "recommend", "satisfied", "wonderful", "awesome", "nice", "pleased", "easy", "best",
    "gut", "super", "danke", "toll", "bien", "merci", "excellent", "parfait", "bueno", "gracias", "genial",
    "ottimo", "grazie", "bom", "obrigado", "obrigada", "goed", "bedankt", "prima",
]
_NEGATIVE = [
    "bad", "terrible", "awful", "hate", "broken", "slow", "late", "refund", "angry", "disappointed", "worst",
    "poor", "problem", "issue", "error", "fail", "failed", "never", "useless", "damaged", "wrong", "cancel",
    "schlecht", "kaputt", "problem", "mauvais", "problème", "malo", "problema", "cattivo", "ruim", "slecht",
]


class SentimentConfig(BaseModel):
    """Lexicon sentiment ``f_sentiment_lex`` = (positive hits - negative hits) / (positive + negative hits), 0 when none."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Compute the lexicon sentiment score.")
    positive: list[str] = Field(default_factory=lambda: list(_POSITIVE), description="Positive words (whole words, case-insensitive).")
    negative: list[str] = Field(default_factory=lambda: list(_NEGATIVE), description="Negative words (whole words, case-insensitive).")

    @model_validator(mode="after")
    def _non_empty(self) -> SentimentConfig:
        if self.enabled and not (self.positive or self.negative):
            raise ValueError("sentiment: enabled with empty positive and negative word lists")
        return self


class PiiFeaturesConfig(BaseModel):
    """PII features derived from the privacy stage's columns: ``f_pii_<type>``, ``f_pii_total``, ``f_classification``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Publish the privacy stage's per-type counts and classification as features.")
    types: list[str] = Field(
        default_factory=lambda: [e.lower() for e in entity_names()],
        description="PII types to publish as f_pii_<type> (read from the privacy stage's column pii_<type>; 0 when absent). Default: every built-in entity type.",
    )
    default_classification: str = Field(
        "unknown", description="f_classification when the privacy stage produced no 'classification' column or a null."
    )


class InjectionPattern(BaseModel):
    """One prompt-injection or abuse pattern."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Stable pattern name reported in inj_patterns (lower snake_case).")
    family: str = Field(description="Pattern family, e.g. instruction_override, role_injection, sql_injection.")
    severity: Severity = Field(description="low, medium, high or critical; weighted by injection.severity_weights.")
    pattern: str = Field(
        description=(
            "Regular expression (the common subset of Python re and Rust regex: no look-around or back-references); "
            "matched case-insensitively, every literal space matches any run of white space, and \\b is an ASCII word boundary."
        )
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "pattern name")

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        return _check_name(v, "pattern family")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compile_loose(v)
        except re.error as exc:
            raise ValueError(f"pattern {v!r} is not a valid regular expression: {exc}") from None
        try:  # the engine matches with Polars (Rust regex): no look-around, no back-references
            pl.Series([""], dtype=pl.Utf8).str.contains("(?i)" + loosen(v, ascii_word_boundary=True))
        except Exception as exc:  # polars raises ComputeError on a bad pattern
            raise ValueError(f"pattern {v!r} is not supported by the Rust regex engine: {exc}") from None
        return v


def _p(name: str, family: str, severity: Severity, pattern: str) -> InjectionPattern:
    return InjectionPattern(name=name, family=family, severity=severity, pattern=pattern)


def default_injection_patterns() -> list[InjectionPattern]:
    """The built-in pattern set (families: instruction_override, role_injection, special_token,
    code_injection, sql_injection, shell_injection)."""
    return [
        # instruction overrides
        _p("ignore_previous", "instruction_override", "high",
           r"\b(?:ignore|disregard|skip|override|bypass) (?:all |any |the |your |my )*(?:previous|prior|above|earlier|preceding|system|original) (?:instructions?|prompts?|rules|directions|messages?|context|guidelines)\b"),
        _p("forget_above", "instruction_override", "high",
           r"\bforget (?:about )?(?:everything|all|anything|what) (?:(?:you (?:were|have been) told|i said|above|before|previously|so far|prior)\b ?)+"),
        _p("pretend_to_be", "instruction_override", "medium", r"\bpretend (?:to be|you are|you're|that you are)\b"),
        _p("act_as", "instruction_override", "medium",
           r"\bact as (?:if you (?:are|were)|an? (?:unrestricted|unfiltered|jailbroken|evil|different|new)\b|my\b|dan\b|the system|root|admin)"),
        _p("new_instructions", "instruction_override", "high",
           r"\b(?:new|updated|real) (?:system )?instructions ?:|\byou (?:are now|will now|must now) (?:act|behave|respond|answer|be)\b|\bfrom now on,? you (?:are|will|must)\b"),
        _p("jailbreak_mode", "instruction_override", "high",
           r"\b(?:developer|jailbreak|god|dan|unrestricted) mode\b|\bdo anything now\b|\bwithout (?:any )?(?:restrictions|filters|censorship)\b"),
        _p("reveal_prompt", "instruction_override", "medium",
           r"\b(?:reveal|show|print|repeat|output|tell me) (?:me )?(?:your |the )(?:system |hidden |initial |original )(?:prompt|instructions)\b"),
        # role injection
        _p("role_system", "role_injection", "high", r"(?:^|[\n\r.!?\"'\]>]) *(?:system|assistant|developer) ?: "),
        _p("role_tag", "role_injection", "high", r"< ?/? ?(?:system|assistant|im_start|im_end|instructions?) ?>|\brole ?: ?(?:system|developer)\b"),
        _p("markdown_instruction", "role_injection", "high", r"#{2,} ?(?:instruction|instructions|system|system prompt|new task)\b|```\s*system\b"),
        # special tokens
        _p("special_token", "special_token", "critical", r"<\|[^|>\n]{1,40}\|>|\[/?INST\]|<</?SYS>>|<\|endoftext\|>"),
        # code / script injection
        _p("script_tag", "code_injection", "high", r"<\s*script\b|javascript\s*:|\bon(?:error|load|click|mouseover)\s*=\s*['\"]?"),
        _p("code_eval", "code_injection", "high", r"\b(?:eval|exec|system|popen|__import__)\s*\(|\bimport os\b|\bos\.system\b|\bsubprocess\.\w+\("),
        _p("template_injection", "code_injection", "medium", r"\{\{[^}]{0,80}(?:__class__|config|self|request|import)[^}]{0,80}\}\}|\$\{jndi:"),
        # SQL
        _p("sql_union_select", "sql_injection", "high", r"\bunion (?:all )?select\b"),
        _p("sql_drop_delete", "sql_injection", "high", r"\b(?:drop (?:table|database)|delete from|truncate table|insert into|update \w+ set)\b"),
        _p("sql_tautology", "sql_injection", "high", r"'\s*(?:or|and)\s*'?\d+'?\s*=\s*'?\d+|'\s*or\s*'[^']*'\s*=\s*'|'\s*;?\s*--|;\s*--\s*$"),
        # shell
        _p("shell_chain", "shell_injection", "high",
           r"(?:;|&&|\|\||\|)\s*(?:rm|cat|ls|nc|netcat|curl|wget|bash|sh|chmod|chown|python|perl|whoami|id)\b(?:\s+-{0,2}\w|\s*$|\s*;)"),
        _p("shell_subst", "shell_injection", "high", r"\$\((?:[^)]{1,80})\)|`[^`\n]{0,40}(?:rm|cat|curl|wget|whoami|id|sh)\b[^`\n]{0,40}`"),
        _p("shell_paths", "shell_injection", "medium", r"/etc/(?:passwd|shadow)|\brm -rf\b|/bin/(?:ba)?sh\b|\bchmod \+x\b"),
    ]


class InjectionConfig(BaseModel):
    """Prompt-injection and abuse signals: ``inj_risk_score``, ``inj_patterns``, ``inj_families``, ``inj_flag``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Compute the injection signals.")
    patterns: list[InjectionPattern] = Field(
        default_factory=default_injection_patterns, description="Patterns with name, family, severity and regex."
    )
    severity_weights: dict[Severity, float] = Field(
        default_factory=lambda: {"low": 0.2, "medium": 0.5, "high": 0.8, "critical": 0.95},
        description="Weight in [0, 1] of each severity. inj_risk_score = 1 - prod(1 - weight) over matched patterns.",
    )
    flag_threshold: float = Field(0.5, ge=0, le=1, description="inj_flag is true when inj_risk_score >= this.")

    @model_validator(mode="after")
    def _check(self) -> InjectionConfig:
        names = [p.name for p in self.patterns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"injection.patterns: duplicate pattern names {dupes}")
        for sev in ("low", "medium", "high", "critical"):
            w = self.severity_weights.get(sev)  # type: ignore[call-overload]
            if w is None:
                raise ValueError(f"injection.severity_weights: missing weight for severity {sev!r}")
            if not 0 <= w <= 1:
                raise ValueError(f"injection.severity_weights.{sev}: {w} is outside [0, 1]")
        return self


class SanitizeConfig(BaseModel):
    """Input sanitization for model calls (``model_input``, ``model_input_sha256``, ``model_input_chars``)."""

    model_config = ConfigDict(extra="forbid")

    normalize_whitespace: bool = Field(
        True, description="Collapse runs of spaces (and other horizontal white space) to one space, trim each line, and collapse 3+ new lines to 2."
    )
    strip_control: bool = Field(True, description="Remove control and format characters except new line and tab.")
    max_chars: int = Field(8000, ge=1, description="Cap on characters sent to a model; longer input is cut at this length.")
    truncation_marker: str = Field(" [truncated]", description="Appended after a cut (counted within max_chars).")
    neutralize_injections: bool = Field(
        True, description="Replace spans matched by injection patterns with the placeholder before the text reaches a model."
    )
    neutralize_min_severity: Severity = Field("medium", description="Only patterns of this severity or higher are neutralized.")
    placeholder: str = Field("[removed:{name}]", description="Replacement for a neutralized span; '{name}' is the pattern name.")


class FeaturesConfig(BaseModel):
    """Settings of the features stage and of input sanitization for model calls."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the features stage at all.")
    text_column: str = Field("text", description="Column holding the (already masked) text.")
    text_stats: TextStatsConfig = Field(default_factory=TextStatsConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    sentiment: SentimentConfig = Field(default_factory=SentimentConfig)
    pii: PiiFeaturesConfig = Field(default_factory=PiiFeaturesConfig)
    injection: InjectionConfig = Field(default_factory=InjectionConfig)
    categorical: list[CategoricalFeature] = Field(
        default_factory=lambda: [
            CategoricalFeature(
                name="source_code", column="source", mapping={"support-desk": 0, "reviews": 1, "chat": 2}, default=-1
            ),
            CategoricalFeature(
                name="priority_code", attribute="priority", mapping={"low": 0, "normal": 1, "high": 2}, default=-1
            ),
        ],
        description="Categorical encodings (output f_<name>, Int32).",
    )
    binning: list[BinningFeature] = Field(
        default_factory=lambda: [
            BinningFeature(name="price_band", attribute="price", edges=[20, 100, 250], labels=["low", "mid", "high", "premium"]),
            BinningFeature(name="rating_band", attribute="rating", edges=[3, 4], labels=["negative", "neutral", "positive"]),
        ],
        description="Numeric binnings (output f_<name>, Utf8 bin label).",
    )
    custom: dict[str, dict[str, object]] = Field(
        default_factory=dict,
        description="Extra registered feature kinds to run: kind name -> its parameters (see docs/features.md).",
    )
    sanitize: SanitizeConfig = Field(default_factory=SanitizeConfig)

    @model_validator(mode="after")
    def _unique_outputs(self) -> FeaturesConfig:
        names = [c.name for c in self.categorical] + [b.name for b in self.binning]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"categorical/binning: duplicate feature names {dupes}")
        return self
