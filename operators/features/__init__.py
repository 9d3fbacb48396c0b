"""Declarative, vectorized features computed on the masked text of every event.

Build once, apply per micro-batch::

    engine = FeatureEngine.from_config(cfg.features)
    batch = features_batch(batch, engine)          # or compute_features(frame, engine)
    specs = feature_schema(engine)                  # [FeatureSpec(name, dtype, kind, description)]

Built-in kinds (configured in ``features.*``): ``text_stats``, ``language``,
``sentiment``, ``categorical``, ``binning``, ``pii``, ``injection``.  A new kind is
one class registered with :func:`register_feature` and enabled in
``features.custom.<name>`` (see ``docs/features.md``).
"""

from __future__ import annotations

# Importing the modules registers the built-in kinds.
from driftline.operators.features import encoding, injection, language, pii, text  # noqa: F401
from driftline.operators.features.engine import (
    BUILTIN_KINDS,
    FeatureEngine,
    FeatureError,
    compute_features,
    feature_columns,
    feature_schema,
    features_batch,
)
from driftline.operators.features.injection import InjectionMatcher
from driftline.operators.features.registry import FEATURE_KINDS, FeatureKind, FeatureSpec, register_feature

__all__ = [
    "BUILTIN_KINDS",
    "FEATURE_KINDS",
    "FeatureEngine",
    "FeatureError",
    "FeatureKind",
    "FeatureSpec",
    "InjectionMatcher",
    "compute_features",
    "feature_columns",
    "feature_schema",
    "features_batch",
    "register_feature",
]
