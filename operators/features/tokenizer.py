"""Token counting for ``f_tokens_est``: a vectorized estimate or an exact offline BPE count.

``estimate`` (the default) is a Polars expression over counts the text statistics
already compute, so it costs almost nothing:

    tokens ~= round(char_weight * chars + punct_weight * punct + digit_weight * digits)

where ``punct`` counts characters that are neither letters, digits nor white space.
The default weights (0.24, 0.96, 0.27) were fitted by least squares on the synthetic
producer's seven languages against ``cl100k_base``; on held-out texts the mean
absolute percentage error is about 10% and the total bias under 1%
(``tests/operators/features/test_features_tokenizer.py`` checks it).

``cl100k_base`` / ``o200k_base`` count exact tokens with the Rust ``bpe-openai``
tokenizer, whose wheel ships the BPE rank files, so nothing is downloaded at run time
(about 5 us for a 150-character text).

>>> import polars as pl
>>> from driftline.config.features import TextStatsConfig
>>> counter = build_token_counter(TextStatsConfig())
>>> pl.select(counter.expr(pl.lit("Hello world, how are you?"))).item()
8
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import polars as pl

from driftline.config.features import TextStatsConfig

PUNCT_RE = r"[^\p{L}\p{N}\s]"
DIGIT_RE = r"\d"
OFFLINE_ENCODINGS = ("cl100k_base", "o200k_base")


class EstimateCounter:
    """The documented linear estimate (see module docstring)."""

    exact = False

    def __init__(self, cfg: TextStatsConfig) -> None:
        self.name = "estimate"
        self.cfg = cfg

    def expr_from_counts(self, chars: pl.Expr, punct: pl.Expr, digits: pl.Expr) -> pl.Expr:
        """The estimate from already computed counts (lets text stats share them)."""
        c = self.cfg
        est = chars.cast(pl.Float64) * c.char_weight + punct.cast(pl.Float64) * c.punct_weight + digits.cast(pl.Float64) * c.digit_weight
        return est.round(0).cast(pl.UInt32)

    def expr(self, text: pl.Expr) -> pl.Expr:
        """A vectorized expression estimating the token count of ``text``."""
        return self.expr_from_counts(text.str.len_chars(), text.str.count_matches(PUNCT_RE), text.str.count_matches(DIGIT_RE))

    def count(self, texts: pl.Series) -> pl.Series:
        """Estimated token counts of ``texts`` (UInt32, null for null text)."""
        return pl.select(self.expr(pl.lit(texts))).to_series().alias(texts.name)


@lru_cache(maxsize=None)
def load_offline_tokenizer(name: str) -> Any:
    """The Rust BPE tokenizer of ``bpe-openai`` for ``cl100k_base`` or ``o200k_base``.

    Its wheel embeds the vocabularies: no network access, ever.  Cached per process.
    """
    if name not in OFFLINE_ENCODINGS:
        raise ValueError(f"unknown offline encoding {name!r}; known: {', '.join(OFFLINE_ENCODINGS)}")
    from bpe_openai import _bindings  # the package's compiled tokenizer (typed in _bindings.pyi)

    with warnings.catch_warnings():  # bpe-openai reads its rank files with a deprecated importlib API
        warnings.simplefilter("ignore", DeprecationWarning)
        return _bindings.tokenizer_for_encoding(name)


class ExactCounter:
    """Exact BPE token count with an offline vocabulary (one native call per text)."""

    exact = True

    def __init__(self, encoding: str) -> None:
        self.name = encoding
        self._tok = load_offline_tokenizer(encoding)

    def count(self, texts: pl.Series) -> pl.Series:
        """Exact token counts of ``texts`` (UInt32, null for null text)."""
        count = self._tok.count
        return pl.Series(texts.name, [None if t is None else count(t) for t in texts.to_list()], dtype=pl.UInt32)


def build_token_counter(cfg: TextStatsConfig) -> EstimateCounter | ExactCounter:
    """The counter named by ``features.text_stats.tokenizer``."""
    if cfg.tokenizer == "estimate":
        return EstimateCounter(cfg)
    return ExactCounter(cfg.tokenizer)
