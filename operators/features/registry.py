"""Registry of feature kinds and the published feature schema.

A feature kind is one small class registered by name.  It is built once from the
configuration (:meth:`FeatureKind.from_config`), declares the columns it adds
(:meth:`FeatureKind.specs`) and returns them for a micro-batch
(:meth:`FeatureKind.compute`) as Polars expressions (preferred: the engine evaluates all
kinds' expressions in one ``with_columns``, in parallel) or as ready Series when a
library must be called on the batch (e.g. a language detector).

>>> import polars as pl
>>> @register_feature("shout_count_example")
... class ShoutCount(FeatureKind):
...     '''Words written fully in capitals.'''
...     @classmethod
...     def from_config(cls, cfg, params):
...         return cls()
...     def specs(self):
...         return [FeatureSpec("f_shouts", pl.UInt32, "numeric", "words of 2+ capitals")]
...     def compute(self, frame, text):
...         return [text.str.count_matches(r"\\b[A-Z]{2,}\\b").alias("f_shouts")]
>>> "shout_count_example" in FEATURE_KINDS
True
>>> _ = FEATURE_KINDS.pop("shout_count_example")
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import polars as pl

from driftline.config.features import FeaturesConfig

FeatureKindName = Literal["numeric", "categorical", "list"]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One output column of the features stage.

    ``kind`` tells the drift monitor how to compare distributions: ``numeric`` (binned
    or quantile comparison), ``categorical`` (category shares) or ``list`` (shares of
    each element, e.g. matched pattern names).
    """

    name: str
    dtype: pl.DataType
    kind: FeatureKindName
    description: str


class FeatureKind(ABC):
    """Base class of a registered feature kind."""

    kind_name: ClassVar[str] = ""
    #: True when every column of the kind is a function of the row's text alone: the engine
    #: then computes the kind once per distinct text of a micro-batch and copies the values
    #: to the repeated texts (templates, bots, "thanks!").
    text_only: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: FeaturesConfig, params: Mapping[str, Any]) -> FeatureKind | None:
        """Build the kind from the configuration; ``None`` when it is disabled.

        ``params`` are the entry ``features.custom.<kind name>`` for custom kinds and
        empty for the built-ins, which read their own typed section of ``cfg``.
        Raise ``ValueError`` naming the bad parameter when ``params`` are invalid.
        """

    @abstractmethod
    def specs(self) -> list[FeatureSpec]:
        """The columns this kind adds, in order."""

    @abstractmethod
    def compute(self, frame: pl.DataFrame, text: pl.Expr) -> list[pl.Expr | pl.Series]:
        """Expressions (or Series of ``frame.height`` rows) producing exactly :meth:`specs`.

        ``text`` is the expression of the masked text column.
        """


K = TypeVar("K", bound=type[FeatureKind])

FEATURE_KINDS: dict[str, type[FeatureKind]] = {}


def register_feature(name: str) -> Callable[[K], K]:
    """Class decorator registering a feature kind under ``name``."""

    def deco(cls: K) -> K:
        existing = FEATURE_KINDS.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"feature kind {name!r} is already registered by {existing.__qualname__}")
        cls.kind_name = name
        FEATURE_KINDS[name] = cls
        return cls

    return deco
