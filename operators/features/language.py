"""Built-in kind ``language``: ``f_lang`` (ISO 639-1 or ``und``) and ``f_lang_conf``.

Detectors are registered by name (:data:`DETECTORS`); each is built once at start-up
and called once per micro-batch with the list of texts.  The default, ``cld2``, was
chosen by ``bench/bench_langdetect.py`` (see ``docs/features.md``).

- ``cld2`` (pycld2, Compact Language Detector 2, model compiled into the wheel):
  confidence = share of the text's bytes in the chosen language (``percent / 100``),
  halved when CLD2 reports the answer as unreliable.
- ``lingua_low`` / ``lingua_high`` (lingua-language-detector, models in the wheel):
  the top language of ``compute_language_confidence_values_in_parallel`` restricted
  to the configured languages, and its confidence.

Answers outside ``features.language.languages`` and texts shorter than ``min_chars``
give ``und`` with confidence 0.

>>> from driftline.config.features import LanguageConfig
>>> det = build_detector(LanguageConfig())
>>> det.detect(["Ich habe den Staubsauger vor zwei Wochen bestellt und er ist nicht angekommen.", "ok"])[0]
['de', 'und']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import polars as pl

from driftline.config.features import FeaturesConfig, LanguageConfig
from driftline.operators.features.registry import FeatureKind, FeatureSpec, register_feature

UNDETERMINED = "und"
# Characters CLD2 refuses (C0 controls other than \t \n \r, DEL, C1 controls) and lone surrogates.
_CONTROL_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"


class LanguageDetector(Protocol):
    """Detects the language of a batch of texts."""

    def detect(self, texts: list[str]) -> tuple[list[str], list[float]]:
        """ISO 639-1 codes (or ``und``) and confidences in [0, 1], one per text."""


DETECTORS: dict[str, Callable[[LanguageConfig], LanguageDetector]] = {}


def register_detector(name: str) -> Callable[[Callable[[LanguageConfig], LanguageDetector]], Callable[[LanguageConfig], LanguageDetector]]:
    """Register a language detector factory under ``name`` (also add it to ``LanguageConfig.detector``)."""

    def deco(factory: Callable[[LanguageConfig], LanguageDetector]) -> Callable[[LanguageConfig], LanguageDetector]:
        DETECTORS[name] = factory
        return factory

    return deco


@register_detector("cld2")
class Cld2Detector:
    """CLD2 via pycld2 (one native call per text; about 10 us for 150 characters)."""

    def __init__(self, cfg: LanguageConfig) -> None:
        import pycld2

        self._detect = pycld2.detect
        self._error = pycld2.error
        self.allowed = frozenset(cfg.languages)
        self.min_chars = cfg.min_chars

    def _one(self, text: str) -> tuple[str, float]:
        if len(text) < self.min_chars:
            return UNDETERMINED, 0.0
        try:
            reliable, _, details = self._detect(text, bestEffort=True)
        except (self._error, UnicodeEncodeError, ValueError):
            return UNDETERMINED, 0.0
        for _name, code, percent, _score in details:
            if code in self.allowed:
                conf = percent / 100.0
                return code, conf if reliable else conf / 2
        return UNDETERMINED, 0.0

    def detect(self, texts: list[str]) -> tuple[list[str], list[float]]:
        pairs = [self._one(t) for t in texts]
        return [p[0] for p in pairs], [p[1] for p in pairs]


class LinguaDetector:
    """lingua-language-detector restricted to the configured languages (batch API)."""

    def __init__(self, cfg: LanguageConfig, low_accuracy: bool) -> None:
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        codes = [getattr(IsoCode639_1, c.upper()) for c in cfg.languages]
        builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
        if low_accuracy:
            builder = builder.with_low_accuracy_mode()
        self._detector = builder.with_preloaded_language_models().build()
        self.min_chars = cfg.min_chars

    def detect(self, texts: list[str]) -> tuple[list[str], list[float]]:
        idx = [i for i, t in enumerate(texts) if len(t) >= self.min_chars]
        codes = [UNDETERMINED] * len(texts)
        confs = [0.0] * len(texts)
        if idx:
            results = self._detector.compute_language_confidence_values_in_parallel([texts[i] for i in idx])
            for i, values in zip(idx, results):
                if values and values[0].value > 0:
                    codes[i] = values[0].language.iso_code_639_1.name.lower()
                    confs[i] = float(values[0].value)
        return codes, confs


@register_detector("lingua_low")
def _lingua_low(cfg: LanguageConfig) -> LanguageDetector:
    return LinguaDetector(cfg, low_accuracy=True)


@register_detector("lingua_high")
def _lingua_high(cfg: LanguageConfig) -> LanguageDetector:
    return LinguaDetector(cfg, low_accuracy=False)


def build_detector(cfg: LanguageConfig) -> LanguageDetector:
    """The detector named by ``features.language.detector``, loaded now (at start-up)."""
    factory = DETECTORS.get(cfg.detector)
    if factory is None:
        raise ValueError(f"features.language.detector: unknown detector {cfg.detector!r}; registered: {sorted(DETECTORS)}")
    return factory(cfg)


@register_feature("language")
class LanguageFeature(FeatureKind):
    """``f_lang`` and ``f_lang_conf`` from the configured detector."""

    text_only = True

    def __init__(self, detector: LanguageDetector, name: str) -> None:
        self.detector = detector
        self.name = name

    @classmethod
    def from_config(cls, cfg: FeaturesConfig, params: Mapping[str, Any]) -> LanguageFeature | None:
        lc = cfg.language
        return cls(build_detector(lc), lc.detector) if lc.enabled else None

    def specs(self) -> list[FeatureSpec]:
        return [
            FeatureSpec("f_lang", pl.Utf8, "categorical", f"ISO 639-1 language code detected by {self.name}, 'und' if undetermined"),
            FeatureSpec("f_lang_conf", pl.Float64, "numeric", "confidence of f_lang in [0, 1] (0 when undetermined)"),
        ]

    def compute(self, frame: pl.DataFrame, text: pl.Expr) -> list[pl.Expr | pl.Series]:
        # Each distinct text of the batch is detected once (a detector is a function of the
        # text): repeated messages (templates, bots, "thanks!") cost one call per batch.
        cleaned = frame.select(text.fill_null("").str.replace_all(_CONTROL_RE, " ").alias("t"))
        distinct = cleaned.unique("t", maintain_order=True)
        codes, confs = self.detector.detect(distinct["t"].to_list())
        if distinct.height == cleaned.height:
            return [pl.Series("f_lang", codes, dtype=pl.Utf8), pl.Series("f_lang_conf", confs, dtype=pl.Float64)]
        found = distinct.with_columns(pl.Series("f_lang", codes, dtype=pl.Utf8), pl.Series("f_lang_conf", confs, dtype=pl.Float64))
        return cleaned.join(found, on="t", how="left", maintain_order="left", nulls_equal=True).select("f_lang", "f_lang_conf").get_columns()
