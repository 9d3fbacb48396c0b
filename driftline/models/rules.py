"""``rules``: a deterministic keyword classifier, the tier that always answers.

Sentiment counts built-in (or configured) positive and negative words; classification
picks the category with most keyword hits (ties: configuration order; none: the
task's ``default_category``); summarization keeps the first ``summary_words`` words;
extraction returns an empty object.  Confidence is low by design (at most 0.6):
it says a fallback answered.

>>> from driftline.config.models import BackendConfig, TaskConfig
>>> b = RulesBackend("rules", BackendConfig(kind="rules"), {"sentiment": TaskSpec("sentiment", TaskConfig())})
>>> b.call_batch([ModelRequest("k", "terrible, broken and slow", "sentiment")])[0].label
'negative'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from typing import Any

import orjson

from driftline.models.base import ModelBackend, register_backend
from driftline.models.prompts import TaskSpec
from driftline.models.types import ModelRequest, ModelResult

_WORD = re.compile(r"[a-z']+")

DEFAULT_SENTIMENT_KEYWORDS: dict[str, list[str]] = {
    "positive": ["good", "great", "excellent", "love", "loved", "happy", "thanks", "thank", "amazing", "awesome", "perfect", "helpful", "fast", "resolved", "recommend", "nice", "pleased"],
    "negative": ["bad", "terrible", "awful", "hate", "angry", "broken", "slow", "late", "refund", "worst", "poor", "disappointed", "useless", "failed", "error", "crash", "rude", "cancel"],
}


@register_backend("rules")
class RulesBackend(ModelBackend):
    """Keyword rules; never fails."""

    remote = False
    default_model = "keywords"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._vocab: dict[str, dict[str, frozenset[str]]] = {}

    def keywords(self, spec: TaskSpec) -> dict[str, frozenset[str]]:
        """Keyword sets of a task, built on first use and kept (tasks never change)."""
        cached = self._vocab.get(spec.name)
        if cached is None:
            kw = spec.config.keywords or (DEFAULT_SENTIMENT_KEYWORDS if spec.kind == "sentiment" else {c: [c.lower()] for c in spec.config.categories})
            cached = self._vocab[spec.name] = {label: frozenset(w.lower() for w in words) for label, words in kw.items()}
        return cached

    def _answer(self, spec: TaskSpec, text: str) -> tuple[str | None, float, str]:
        if spec.kind == "summarization":
            summary = " ".join(text.split()[: spec.config.summary_words])
            return None, 0.3, orjson.dumps({"summary": summary, "confidence": 0.3}).decode()
        if spec.kind == "extraction":
            return None, 0.0, "{}"
        words = _WORD.findall(text.lower())
        kw = self.keywords(spec)
        hits = {label: sum(1 for w in words if w in vocab) for label, vocab in kw.items()}
        if spec.kind == "sentiment":
            pos, neg = hits.get("positive", 0), hits.get("negative", 0)
            label = "positive" if pos > neg else "negative" if neg > pos else "neutral"
            margin = abs(pos - neg)
            conf = 0.4 if margin == 0 else min(0.6, 0.45 + 0.05 * margin)
        else:
            best = max(hits.items(), key=lambda kv: kv[1]) if hits else (spec.config.default_category, 0)
            label = best[0] if best[1] > 0 else spec.config.default_category
            conf = 0.3 if best[1] == 0 else min(0.6, 0.45 + 0.05 * best[1])
        return label, conf, orjson.dumps({"label": label, "confidence": conf}).decode()

    def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        out = []
        for req in requests:
            spec = self.tasks[req.task]
            label, conf, output = self._answer(spec, req.text or "")
            out.append(ModelResult(label=label, output=output, confidence=conf, model_name=self.model, model_version="1"))
        return out
