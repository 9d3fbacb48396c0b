"""The features stage: build once from configuration, apply to every micro-batch.

>>> import polars as pl
>>> from driftline.config.features import FeaturesConfig
>>> engine = FeatureEngine.from_config(FeaturesConfig(language={"enabled": False}))
>>> out = compute_features(pl.DataFrame({"text": ["Great service, thanks!"], "source": ["reviews"]}), engine)
>>> out.select("f_words", "f_sentiment_lex", "f_source_code", "inj_flag").row(0)
(3, 1.0, 1, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from driftline.config.features import FeaturesConfig
from driftline.operators.batch import MicroBatch
from driftline.operators.features.registry import FEATURE_KINDS, FeatureKind, FeatureSpec

# Built-in kinds, in output order; each reads its own section of FeaturesConfig.
BUILTIN_KINDS: tuple[str, ...] = ("text_stats", "language", "sentiment", "categorical", "binning", "pii", "injection")


class FeatureError(ValueError):
    """The features stage cannot be built or applied; the message names the key or step."""


@dataclass
class FeatureEngine:
    """Configured feature kinds, built once (patterns compiled, detector loaded)."""

    config: FeaturesConfig
    kinds: list[FeatureKind] = field(default_factory=list)
    _specs: list[FeatureSpec] | None = field(default=None, init=False, repr=False, compare=False)
    _casts: list[pl.Expr] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: FeaturesConfig) -> FeatureEngine:
        """Build every enabled kind; raises :class:`FeatureError` naming the bad key."""
        kinds: list[FeatureKind] = []
        if cfg.enabled:
            for name in BUILTIN_KINDS:
                kind = FEATURE_KINDS[name].from_config(cfg, {})
                if kind is not None:
                    kinds.append(kind)
            for name, params in cfg.custom.items():
                if name in BUILTIN_KINDS:
                    raise FeatureError(f"features.custom.{name}: {name!r} is built in; configure it in features.{name} instead")
                kind_cls = FEATURE_KINDS.get(name)
                if kind_cls is None:
                    custom = sorted(set(FEATURE_KINDS) - set(BUILTIN_KINDS))
                    raise FeatureError(f"features.custom.{name}: unknown feature kind {name!r}; registered custom kinds: {custom}")
                try:
                    kind = kind_cls.from_config(cfg, params)
                except (ValueError, TypeError) as exc:
                    raise FeatureError(f"features.custom.{name}: {exc}") from exc
                if kind is not None:
                    kinds.append(kind)
        engine = cls(cfg, kinds)
        names = [s.name for s in engine.specs()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FeatureError(f"features: several feature kinds produce the columns {dupes}")
        return engine

    def casts(self) -> list[pl.Expr]:
        """Each feature column cast to its published dtype (built once)."""
        if self._casts is None:
            self._casts = [pl.col(s.name).cast(s.dtype) for s in self.specs()]
        return self._casts

    def specs(self) -> list[FeatureSpec]:
        """The published output schema, in column order (built once: kinds never change)."""
        if self._specs is None:
            self._specs = [s for k in self.kinds for s in k.specs()]
        return list(self._specs)


def feature_schema(cfg: FeaturesConfig | FeatureEngine) -> list[FeatureSpec]:
    """The columns the features stage adds (name, dtype, kind, description).

    Accepts an engine (cheap) or a configuration (builds the kinds, loading the language
    detector, so prefer passing the engine where one exists).
    """
    engine = cfg if isinstance(cfg, FeatureEngine) else FeatureEngine.from_config(cfg)
    return engine.specs()


def compute_features(frame: pl.DataFrame, engine: FeatureEngine) -> pl.DataFrame:
    """``frame`` plus every configured feature column, cast to the published dtypes.

    Reads the masked text column ``engine.config.text_column``.  The kinds that read only
    the text (:attr:`FeatureKind.text_only`) run once per distinct text of the batch (a
    third of the texts of ordinary traffic are repeats) and their columns are joined back.
    """
    text_col = engine.config.text_column
    if not engine.kinds:
        return frame
    if text_col not in frame.columns:
        raise FeatureError(f"features: the frame has no text column {text_col!r} (columns: {frame.columns})")
    text = pl.col(text_col)
    by_text = _per_distinct_text(frame, engine, text_col)
    outputs: list[pl.Expr | pl.Series] = []
    for kind in engine.kinds:
        if by_text is not None and kind.text_only:
            outputs.extend(by_text[s.name] for s in kind.specs())
        else:
            outputs.extend(kind.compute(frame, text))
    return frame.with_columns(outputs).with_columns(engine.casts())


def _per_distinct_text(frame: pl.DataFrame, engine: FeatureEngine, text_col: str) -> dict[str, pl.Series] | None:
    """The columns of the text-only kinds, computed on the distinct texts and copied to every
    row of ``frame`` (by name); None when no text repeats (then they run on ``frame`` itself)."""
    kinds = [k for k in engine.kinds if k.text_only]
    if not kinds:
        return None
    texts = frame.select(text_col)
    distinct = texts.unique()
    if distinct.height == texts.height:
        return None
    text = pl.col(text_col)
    found = distinct.with_columns([o for k in kinds for o in k.compute(distinct, text)])
    names = [s.name for k in kinds for s in k.specs()]
    copied = texts.join(found.select(text_col, *names), on=text_col, how="left", maintain_order="left", nulls_equal=True)
    return {name: copied.get_column(name) for name in names}


def features_batch(batch: MicroBatch, engine: FeatureEngine) -> MicroBatch:
    """Add the feature columns to ``batch.valid`` (``rejected`` is left as it is)."""
    return MicroBatch(valid=compute_features(batch.valid, engine), rejected=batch.rejected, now=batch.now)


def feature_columns(specs: Sequence[FeatureSpec]) -> dict[str, pl.DataType]:
    """``{name: dtype}`` of ``specs`` (handy for sinks building an Arrow schema)."""
    return {s.name: s.dtype for s in specs}
