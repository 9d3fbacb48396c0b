"""What a batch carries through the chain: its inputs, each row's state, and the result
columns built from them.

>>> b = BatchInputs.from_frame(pl.DataFrame({"text": ["hi"], "src_topic": ["t"], "src_partition": [0], "src_offset": [7]}), task="sentiment", task_by_source={})
>>> b.coords, b.keys
([('t', 0, 7)], ['t:0:7'])
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from driftline.models.base import Backend
from driftline.models.ledger import Coord
from driftline.models.types import ModelResult
from driftline.operators.batch import utf8_lists

if TYPE_CHECKING:
    from driftline.models.routing import TierHealth

MODEL_OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "model_task": pl.Utf8,
    "model_label": pl.Utf8,
    "model_output": pl.Utf8,
    "model_confidence": pl.Float64,
    "model_name": pl.Utf8,
    "model_version": pl.Utf8,
    "model_tier": pl.Utf8,
    "model_tier_index": pl.Int32,
    "model_fallback_reasons": pl.List(pl.Utf8),
    "model_error_class": pl.Utf8,
    "model_retries": pl.Int32,
    "model_input_tokens": pl.Int64,
    "model_output_tokens": pl.Int64,
    "model_cached_tokens": pl.Int64,
    "model_reasoning_tokens": pl.Int64,
    "model_tokens_estimated": pl.Boolean,
    "model_latency_ms": pl.Float64,
    "model_cost_usd": pl.Float64,
    "model_cost_estimated": pl.Boolean,
    "model_cached": pl.Boolean,
    "model_cost_saved_usd": pl.Float64,
    "model_replayed": pl.Boolean,
    "model_budget_event": pl.Utf8,
    "model_route_reason": pl.Utf8,
    "model_cache_similarity": pl.Float64,
    "model_cache_key": pl.Utf8,
}

RECORDED = [c for c in MODEL_OUTPUT_SCHEMA if c != "model_replayed"]

ROUTE_COLUMN = "model_route"
"""The model of the first tier tried for the row (its first choice), whichever tier answered:
monitoring keys windows on it so a failing model's errors and latency stay on its key."""


@dataclass(slots=True)
class Tier:
    """One tier of the chain: its backend and what budgets and metrics need to know of it."""

    index: int
    name: str
    backend: Backend
    price_per_mtok: float  # input + output list price, orders tiers by cost
    priced: bool
    health: TierHealth | None = None  # recent outcomes and latencies (routing strategies)

    @property
    def labels(self) -> dict[str, str]:
        return {"backend": self.backend.kind, "model": self.backend.model or "unknown", "tier": self.name}


@dataclass(slots=True)
class BatchInputs:
    """The columns of a frame the models stage reads, as plain lists (a batch is ~64 rows,
    where one Polars call per row costs more than the loop)."""

    texts: list[str]
    tasks: list[str]
    private: list[bool]
    tenants: list[str | None]
    sources: list[str | None]
    coords: list[Coord | None]
    keys: list[str]  # the event's identity: source coordinates, else event id, else unique
    traces: list[str | None]  # the record's traceparent (driftline.tracing), None when not traced

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, *, task: str, task_by_source: Mapping[str, str]) -> BatchInputs:
        n = frame.height
        cols = frame.columns
        text_col = "model_input" if "model_input" in cols else "text"
        texts = frame[text_col].fill_null("").to_list() if text_col in cols else [""] * n
        if "source" in cols and task_by_source:
            tasks = frame["source"].replace_strict(dict(task_by_source), default=task, return_dtype=pl.Utf8).to_list()
        else:
            tasks = [task] * n
        route_local = frame["route_local"].to_list() if "route_local" in cols else [None] * n
        classification = frame["classification"].to_list() if "classification" in cols else [None] * n
        private = [bool(r) or c == "restricted" for r, c in zip(route_local, classification)]
        tenants = frame["tenant"].to_list() if "tenant" in cols else [None] * n
        sources = frame["source"].to_list() if "source" in cols else [None] * n
        coords: list[Coord | None]
        if all(c in cols for c in ("src_topic", "src_partition", "src_offset")):
            coords = [
                (t, int(p), int(o)) if t is not None and p is not None and o is not None else None
                for t, p, o in zip(frame["src_topic"].to_list(), frame["src_partition"].to_list(), frame["src_offset"].to_list())
            ]
        else:
            coords = [None] * n
        ids = frame["event_id"].to_list() if "event_id" in cols else [None] * n
        # a key is stable across a replay when the event has coordinates or an id; otherwise
        # it must never repeat (a provider honouring it would answer another text)
        keys = [f"{c[0]}:{c[1]}:{c[2]}" if c is not None else (str(e) if e is not None else f"anon-{uuid.uuid4().hex}") for c, e in zip(coords, ids)]
        traces = frame["trace_parent"].to_list() if "trace_parent" in cols else [None] * n
        return cls(texts, tasks, private, tenants, sources, coords, keys, traces)


class RowState:
    """One row while the chain runs."""

    __slots__ = (
        "answer", "tier", "reasons", "error_class", "retries", "cost", "cost_estimated", "latency", "cached", "saved",
        "budget_event", "remote", "price_floor", "committed", "route_reason", "similarity", "cache_key",
    )

    def __init__(self) -> None:
        self.answer: ModelResult | None = None
        self.tier: Tier | None = None
        self.reasons: list[str] = []
        self.error_class: str | None = None
        self.retries = 0
        self.cost = 0.0
        self.cost_estimated = False
        self.latency = 0.0
        self.cached = False
        self.saved = 0.0
        self.budget_event: str | None = None
        self.remote = False  # a remote tier answered or failed it: its result goes to the ledger
        self.price_floor: float | None = None
        self.committed = False
        self.route_reason: str | None = None
        self.similarity: float | None = None  # cache hits: 1.0 exact, else the near-duplicate's similarity
        self.cache_key: str | None = None  # cache hits: the key of the answer reused

    def skip(self, tier: Tier, reason: str) -> None:
        self.reasons.append(f"{tier.name}:{reason}")

    def fail(self, tier: Tier, error_class: str) -> None:
        self.error_class = error_class
        self.reasons.append(f"{tier.name}:{error_class}")

    def record(self, task: str) -> dict[str, Any]:
        """What the ledger keeps of the row (a replay emits exactly this)."""
        cols = _columns([self], [task])
        return {c: cols[c][0] for c in RECORDED}


_NO_ANSWER = ModelResult()  # stands in for replayed rows, whose columns come from their record


def _columns(rows: list[RowState], tasks: list[str]) -> dict[str, list[Any]]:
    """The result columns of ``rows``, in :data:`MODEL_OUTPUT_SCHEMA` order (built column by
    column: a list comprehension per column costs less than a tuple per row)."""
    answers = [r.answer or _NO_ANSWER for r in rows]
    tiers = [r.tier for r in rows]
    return {
        "model_task": list(tasks),
        "model_label": [a.label for a in answers],
        "model_output": [a.output for a in answers],
        "model_confidence": [a.confidence for a in answers],
        "model_name": [a.model_name for a in answers],
        "model_version": [a.model_version for a in answers],
        "model_tier": [t.name if t else None for t in tiers],
        "model_tier_index": [t.index if t else None for t in tiers],
        "model_fallback_reasons": [r.reasons for r in rows],
        "model_error_class": [r.error_class for r in rows],
        "model_retries": [r.retries for r in rows],
        "model_input_tokens": [a.input_tokens for a in answers],
        "model_output_tokens": [a.output_tokens for a in answers],
        "model_cached_tokens": [a.cached_tokens for a in answers],
        "model_reasoning_tokens": [a.reasoning_tokens for a in answers],
        "model_tokens_estimated": [a.tokens_estimated for a in answers],
        "model_latency_ms": [round(r.latency, 3) for r in rows],
        "model_cost_usd": [round(r.cost, 10) for r in rows],
        "model_cost_estimated": [r.cost_estimated for r in rows],
        "model_cached": [r.cached for r in rows],
        "model_cost_saved_usd": [round(r.saved, 10) for r in rows],
        "model_replayed": [False] * len(rows),
        "model_budget_event": [r.budget_event for r in rows],
        "model_route_reason": [r.route_reason for r in rows],
        "model_cache_similarity": [r.similarity for r in rows],
        "model_cache_key": [r.cache_key for r in rows],
    }


def result_frame(frame: pl.DataFrame, rows: list[RowState], tasks: list[str], replayed: Mapping[int, Mapping[str, Any]], tiers: list[Tier]) -> pl.DataFrame:
    """``frame`` with the result columns and :data:`ROUTE_COLUMN` (replayed rows take their record)."""
    cols = _columns(rows, tasks)
    for i, rec in replayed.items():
        for c in RECORDED:
            cols[c][i] = rec.get(c)
        cols["model_replayed"][i] = True
    out = pl.DataFrame([utf8_lists(c, cols[c]) if c == "model_fallback_reasons" else pl.Series(c, cols[c], dtype=t) for c, t in MODEL_OUTPUT_SCHEMA.items()])
    if any(c in MODEL_OUTPUT_SCHEMA for c in frame.columns):
        frame = frame.select([c for c in frame.columns if c not in MODEL_OUTPUT_SCHEMA])
    return _with_route(frame.hstack(out), tiers)


def answered_frame(frame: pl.DataFrame, tasks: pl.Series, answers: pl.DataFrame, tier: Tier, latency_ms: float, route_reason: str) -> pl.DataFrame:
    """What :func:`result_frame` gives when ``tier`` answered every row at its first try,
    from the tier's answer columns (:class:`~driftline.models.base.ColumnAnswers`): no
    fallback, cost, cache, retry or budget figures, the route is the tier's model."""
    if any(c in MODEL_OUTPUT_SCHEMA for c in frame.columns):
        frame = frame.select([c for c in frame.columns if c not in MODEL_OUTPUT_SCHEMA])
    given = {"model_task": tasks, **{c: answers[c] for c in answers.columns}}
    fixed: dict[str, Any] = {
        "model_tier": tier.name,
        "model_tier_index": tier.index,
        "model_retries": 0,
        "model_input_tokens": 0,
        "model_output_tokens": 0,
        "model_cached_tokens": 0,
        "model_reasoning_tokens": 0,
        "model_tokens_estimated": False,
        "model_latency_ms": round(latency_ms, 3),
        "model_cost_usd": 0.0,
        "model_cost_estimated": False,
        "model_cached": False,
        "model_cost_saved_usd": 0.0,
        "model_replayed": False,
        "model_route_reason": route_reason,
    }
    cols: list[pl.Series | pl.Expr] = []
    for c, t in MODEL_OUTPUT_SCHEMA.items():
        if c in given:
            cols.append(given[c].cast(t).alias(c))
        elif c == "model_fallback_reasons":
            cols.append(pl.lit([], t).alias(c))  # no fallback: an empty list, not null
        else:
            cols.append(pl.lit(fixed.get(c), t).alias(c))
    cols.append(pl.lit(tier.backend.model, pl.Utf8).alias(ROUTE_COLUMN))
    return frame.with_columns(cols)


def _with_route(results: pl.DataFrame, tiers: list[Tier]) -> pl.DataFrame:
    """Add :data:`ROUTE_COLUMN`: the first tier named in the fallback reasons, else the answering tier."""
    reasons = pl.col("model_fallback_reasons")
    first_tier = pl.when(reasons.list.len().fill_null(0) > 0).then(reasons.list.first().str.split(":").list.first()).otherwise(pl.col("model_tier"))
    models = {t.name: t.backend.model for t in tiers}
    return results.with_columns(first_tier.replace_strict(models, default=pl.col("model_name"), return_dtype=pl.Utf8).alias(ROUTE_COLUMN))
