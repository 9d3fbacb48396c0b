"""``local``: VADER sentiment on the CPU, offline (the lexicon ships with vaderSentiment).

The compound score c in [-1, 1] maps to a label with the backend's thresholds
(defaults +/-0.05, VADER's own) and a confidence in [0, 1]: for positive and
negative ``0.5 + 0.5 * |c|``; for neutral ``1 - 0.5 * |c| / threshold`` (1 at c = 0,
0.5 at the threshold).  Only the sentiment task is supported; other tasks fall
through to the next tier with error class ``unsupported``.

>>> from driftline.config.models import BackendConfig, TaskConfig
>>> b = VaderBackend("local", BackendConfig(kind="local"), {"sentiment": TaskSpec("sentiment", TaskConfig())})
>>> r = b.call_batch([ModelRequest("k", "I love this, great job!", "sentiment")])[0]
>>> r.label, r.confidence > 0.9, r.model_name
('positive', True, 'vader')
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Sequence

import orjson
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from driftline.models.base import ModelBackend, register_backend
from driftline.models.prompts import TaskSpec
from driftline.models.types import ModelRequest, ModelResult

_VERSION = importlib.metadata.version("vaderSentiment")
_ANALYZER: SentimentIntensityAnalyzer | None = None


def _analyzer() -> SentimentIntensityAnalyzer:
    global _ANALYZER
    if _ANALYZER is None:  # loading the lexicon takes ~50 ms: once per process
        _ANALYZER = SentimentIntensityAnalyzer()
    return _ANALYZER


@register_backend("local")
class VaderBackend(ModelBackend):
    """VADER sentiment over whole batches."""

    remote = False
    default_model = "vader"

    def supports(self, task: TaskSpec) -> bool:
        return task.kind == "sentiment"

    def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        start = time.perf_counter()
        analyzer = _analyzer()
        pos_t = self.config.positive_threshold
        neg_t = self.config.negative_threshold
        out: list[ModelResult] = []
        for req in requests:
            spec = self.tasks.get(req.task)
            if spec is None or spec.kind != "sentiment":
                out.append(ModelResult.failure("unsupported", f"local backend runs sentiment only, not {req.task!r}", model_name=self.model))
                continue
            c = float(analyzer.polarity_scores(req.text or "")["compound"])
            if c >= pos_t:
                label, conf = "positive", 0.5 + 0.5 * abs(c)
            elif c <= neg_t:
                label, conf = "negative", 0.5 + 0.5 * abs(c)
            else:
                bound = pos_t if c >= 0 else -neg_t
                conf = 1.0 - 0.5 * abs(c) / bound if bound > 0 else 1.0
                label = "neutral"
            conf = round(min(1.0, max(0.0, conf)), 4)
            out.append(
                ModelResult(
                    label=label,
                    output=orjson.dumps({"label": label, "confidence": conf, "compound": c}).decode(),
                    confidence=conf,
                    model_name=self.model,
                    model_version=_VERSION,
                )
            )
        per_row = (time.perf_counter() - start) * 1000.0 / max(1, len(requests))
        for r in out:
            r.latency_ms = per_row
        return out
