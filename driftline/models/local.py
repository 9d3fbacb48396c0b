"""``local``: VADER sentiment on the CPU, offline (the lexicon ships with vaderSentiment).

Scores come from :class:`~driftline.models.vader.VaderBatch`: vaderSentiment's compound
score computed for the whole batch at once (equal to ``polarity_scores`` on every text,
linear in the text's length; the model input is at most ``features.sanitize.max_chars``
characters, so no single record can be slow).  The backend scores every request it is
given in one batch: the ``batching.max_rows`` chunking exists for remote calls.
:meth:`VaderBackend.answer_columns` gives the same answers as columns, for a batch the
service hands over whole.

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
import math
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import orjson
import polars as pl

from driftline.models.base import ColumnAnswers, ModelBackend, register_backend
from driftline.models.prompts import TaskSpec
from driftline.models.types import ModelRequest, ModelResult
from driftline.models.vader import VaderBatch

_VERSION = importlib.metadata.version("vaderSentiment")


@lru_cache(maxsize=1)
def _scorer() -> VaderBatch:
    return VaderBatch()  # loading the lexicon takes ~50 ms: once per process


@register_backend("local")
class VaderBackend(ModelBackend):
    """VADER sentiment over whole batches."""

    remote = False
    default_model = "vader"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # label, output and confidence by compound score: at most 20,002 entries (scores have 4 decimals)
        self._answers: dict[float, tuple[str, str, float]] = {}

    def supports(self, task: TaskSpec) -> bool:
        return task.kind == "sentiment"

    def _sentiment(self, task: str) -> bool:
        spec = self.tasks.get(task)
        return spec is not None and spec.kind == "sentiment"

    def iter_batch(self, requests: Sequence[ModelRequest], max_rows: int, on_results: Callable[[list[tuple[int, ModelResult]]], None] | None = None) -> Iterator[list[tuple[int, ModelResult]]]:
        """Every request in one batch: a columnar batch costs less per row the larger it is,
        and nothing leaves the process, so ``max_rows`` (sized for remote calls) does not apply.
        ``on_results`` (when given) sees the group before it is yielded, like the base class's."""
        group = list(enumerate(self.call_batch(requests)))
        if on_results is not None:
            on_results(group)
        yield group

    def _answer(self, c: float) -> tuple[str, str, float]:
        """Label, JSON output and confidence of a compound score (see the module docstring)."""
        key = c if c != 0.0 else math.copysign(2.0, c)  # 0.0 and -0.0 print differently: keys 2 and -2 (not a score)
        got = self._answers.get(key)
        if got is None:
            got = self._answers[key] = self._compute_answer(c)
        return got

    def _compute_answer(self, c: float) -> tuple[str, str, float]:
        pos_t = self.config.positive_threshold
        neg_t = self.config.negative_threshold
        if c >= pos_t:
            label, conf = "positive", 0.5 + 0.5 * abs(c)
        elif c <= neg_t:
            label, conf = "negative", 0.5 + 0.5 * abs(c)
        else:
            bound = pos_t if c >= 0 else -neg_t
            conf = 1.0 - 0.5 * abs(c) / bound if bound > 0 else 1.0
            label = "neutral"
        conf = round(min(1.0, max(0.0, conf)), 4)
        return label, orjson.dumps({"label": label, "confidence": conf, "compound": c}).decode(), conf

    def _answer_table(self, distinct: pl.Series) -> tuple[list[str], list[str], list[float]]:
        """Label, output and confidence columns of distinct texts (each scored once)."""
        answers = [self._answer(c) for c in _scorer().compound(distinct)]
        return [a[0] for a in answers], [a[1] for a in answers], [a[2] for a in answers]

    def answer_columns(self, texts: pl.Series) -> ColumnAnswers:
        """Every text answered, as columns (each distinct text scored once): what
        :meth:`call_batch` answers for sentiment requests of these texts."""
        start = time.perf_counter()
        s = texts.cast(pl.Utf8).fill_null("").rename("t")
        distinct = s.unique(maintain_order=True)
        labels, outputs, confs = self._answer_table(distinct)
        table = pl.DataFrame(
            {"t": distinct, "model_label": labels, "model_output": outputs, "model_confidence": confs},
            schema={"t": pl.Utf8, "model_label": pl.Utf8, "model_output": pl.Utf8, "model_confidence": pl.Float64},
        )
        frame = s.to_frame().join(table, on="t", how="left", maintain_order="left").select(
            "model_label", "model_output", "model_confidence", pl.lit(self.model, pl.Utf8).alias("model_name"), pl.lit(_VERSION, pl.Utf8).alias("model_version")
        )
        return ColumnAnswers(frame, (time.perf_counter() - start) * 1000.0 / max(1, s.len()))

    def call_batch(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        start = time.perf_counter()
        supported = [self._sentiment(req.task) for req in requests]
        # each distinct text is scored once (VADER is a function of the text): a batch's
        # repeated messages cost one score, and share its label, confidence and output
        distinct = list(dict.fromkeys(req.text or "" for req, ok in zip(requests, supported) if ok))
        answers = dict(zip(distinct, zip(*self._answer_table(pl.Series(distinct, dtype=pl.Utf8))))) if distinct else {}
        out: list[ModelResult] = []
        for req, ok in zip(requests, supported):
            if not ok:
                out.append(ModelResult.failure("unsupported", f"local backend runs sentiment only, not {req.task!r}", model_name=self.model))
                continue
            label, output, conf = answers[req.text or ""]
            out.append(ModelResult(label=label, output=output, confidence=conf, model_name=self.model, model_version=_VERSION))
        per_row = (time.perf_counter() - start) * 1000.0 / max(1, len(requests))
        for r in out:
            r.latency_ms = per_row
        return out
