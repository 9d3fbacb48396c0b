"""The model service: runs a frame of requests through the fallback chain.

For every row, in order: a result recorded in the call ledger is reused (replay);
otherwise each tier of the chain is tried until one answers.  A tier is skipped for a
row when it is remote and the row is private (``route_local`` or classification
``restricted``: reason ``privacy``), when it is priced and the row's tenant or source
budget would be exceeded (reason ``budget``), or when it cannot run the row's task
(``unsupported``).  A remote tier first looks in the response cache.  Failures are
classified and the row moves on; a rules tier closes every chain, so no row is ever
left without a result.  Results involving a remote call are committed to the ledger
before the frame is returned: an answer from a remote tier as soon as it arrives (while
the rest of the batch is in flight), a remote failure answered by a later tier at the
end of the batch.

>>> from driftline.config.models import ModelsConfig, LedgerConfig
>>> svc = ModelService(ModelsConfig(ledger=LedgerConfig(enabled=False)))
>>> out = svc.process(pl.DataFrame({"text": ["great service, thanks!", "awful"]})).results
>>> out.select("model_label", "model_tier").rows()
[('positive', 'local'), ('negative', 'local')]
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as _Counter
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from driftline.clock import Clock, SystemClock
from driftline.config.models import BackendConfig, ModelsConfig
from driftline.models import metrics
from driftline.models.base import ModelBackend, build_backend
from driftline.models.budget import BudgetTracker, budget_events_frame
from driftline.models.cache import CachedAnswer, ResponseCache, cache_key
from driftline.models.ledger import CallLedger, Coord
from driftline.models.pricing import call_cost, estimate_tokens, is_priced
from driftline.models.prompts import TaskSpec
from driftline.models.types import ModelRequest, ModelResult

log = logging.getLogger("driftline.models")

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
}

_NO_EVENTS = budget_events_frame([])
_RECORDED = [c for c in MODEL_OUTPUT_SCHEMA if c != "model_replayed"]


def _list_column(name: str, values: list[list[str] | None]) -> pl.Series:
    """A List(Utf8) column built through Arrow offsets (10x faster than from nested lists)."""
    offsets = [0]
    flat: list[str] = []
    for v in values:
        if v:
            flat.extend(v)
        offsets.append(len(flat))
    arr = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.large_string()))
    return pl.Series(name, arr).cast(pl.List(pl.Utf8))


ROUTE_COLUMN = "model_route"
"""The model of the first tier tried for the row (its first choice), whichever tier answered:
monitoring keys windows on it so a failing model's errors and latency stay on its key."""


def model_output_schema(cfg: ModelsConfig | None = None) -> dict[str, pl.DataType]:
    """The result columns the models stage adds (stable, whatever the configuration)."""
    return {**MODEL_OUTPUT_SCHEMA, ROUTE_COLUMN: pl.Utf8}


@dataclass(slots=True)
class Tier:
    index: int
    name: str
    backend: ModelBackend
    price_per_mtok: float  # input + output list price, orders tiers by cost
    priced: bool


@dataclass(slots=True)
class ModelBatchResult:
    """The input rows with result columns, plus budget events raised while computing them."""

    results: pl.DataFrame
    budget_events: pl.DataFrame


class _Row:
    """Per-row bookkeeping while the chain runs (only Python objects: a batch is ~64 rows)."""

    __slots__ = ("answer", "tier", "reasons", "error_class", "retries", "cost", "cost_estimated", "latency", "cached", "saved", "budget_event", "remote", "price_floor", "record", "committed")

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
        self.remote = False
        self.price_floor: float | None = None
        self.record: dict[str, Any] | None = None
        self.committed = False  # recorded in the ledger as soon as a remote tier answered


class ModelService:
    """Backends, breakers, cache, budgets and ledger of one worker process.

    ``backends`` lets tests or extensions pass pre-built backends by tier name.
    """

    def __init__(
        self,
        config: ModelsConfig,
        clock: Clock | None = None,
        *,
        backends: Mapping[str, ModelBackend] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.tasks = {name: TaskSpec(name, t) for name, t in config.tasks.items()}
        self.config_hash = config.config_hash()
        chain = list(config.chain)
        tier_cfgs: dict[str, BackendConfig] = dict(config.backends)
        if tier_cfgs[chain[-1]].kind != "rules":
            name = "rules" if "rules" not in tier_cfgs else "rules_final"
            tier_cfgs[name] = BackendConfig(kind="rules")
            chain.append(name)
        self.tiers: list[Tier] = []
        for i, name in enumerate(chain):
            backend = (backends or {}).get(name) or build_backend(name, tier_cfgs[name], self.tasks, self.clock)
            if hasattr(backend, "chars_per_token"):
                backend.chars_per_token = config.chars_per_token  # type: ignore[attr-defined]
            if hasattr(backend, "on_retry"):
                backend.on_retry = self._retry_counter(backend)  # type: ignore[attr-defined]
            price = config.pricing.get(backend.model)
            per_mtok = (price.input_per_mtok + price.output_per_mtok) if price else 0.0
            priced = is_priced(config.pricing, backend.model)
            if backend.remote and not priced:
                log.warning(orjson.dumps({"event": "model_unpriced", "tier": name, "model": backend.model}).decode())
            self.tiers.append(Tier(i, name, backend, per_mtok, priced))
        self._has_remote = any(t.backend.remote for t in self.tiers)  # only remote results are ever recorded
        self.cache = ResponseCache(config.cache.max_entries, config.cache.ttl_s, self.clock) if config.cache.enabled else None
        self.budgets = BudgetTracker(config.budgets, self.clock)
        self._prompt_chars: dict[str, int] = {}
        # only results involving a remote call are recorded: a local-only chain needs no ledger
        self.ledger = CallLedger(config.ledger.path, config.ledger.retention_s, config.ledger.prune_every) if config.ledger.enabled and self._has_remote else None
        self._lock = threading.Lock()
        if self.ledger is not None and self.budgets.enabled:
            day = self.budgets.day()
            self.budgets.load(day, self.ledger.spend(day))

    @staticmethod
    def _retry_counter(backend: ModelBackend) -> Any:
        def on_retry(error_class: str) -> None:
            metrics.RETRIES.labels(backend=backend.kind, model=backend.model, tier=backend.name, error_class=error_class).inc()

        return on_retry

    # ------------------------------------------------------------------
    def _inputs(self, frame: pl.DataFrame) -> tuple[list[str], list[str], list[bool], list[str | None], list[str | None], list[Coord | None], list[str]]:
        n = frame.height
        text_col = "model_input" if "model_input" in frame.columns else "text"
        texts = frame[text_col].fill_null("").to_list() if text_col in frame.columns else [""] * n
        if "source" in frame.columns and self.config.task_by_source:
            tasks = frame["source"].replace_strict(self.config.task_by_source, default=self.config.task, return_dtype=pl.Utf8).to_list()
        else:
            tasks = [self.config.task] * n
        # plain lists: a batch is ~64 rows, where one Polars call costs more than the loop
        route_local = frame["route_local"].to_list() if "route_local" in frame.columns else [None] * n
        classification = frame["classification"].to_list() if "classification" in frame.columns else [None] * n
        private = [bool(r) or c == "restricted" for r, c in zip(route_local, classification)]
        tenants = frame["tenant"].to_list() if "tenant" in frame.columns else [None] * n
        sources = frame["source"].to_list() if "source" in frame.columns else [None] * n
        coords: list[Coord | None]
        if all(c in frame.columns for c in ("src_topic", "src_partition", "src_offset")):
            coords = [
                (t, int(p), int(o)) if t is not None and p is not None and o is not None else None
                for t, p, o in zip(frame["src_topic"].to_list(), frame["src_partition"].to_list(), frame["src_offset"].to_list())
            ]
        else:
            coords = [None] * n
        ids = frame["event_id"].to_list() if "event_id" in frame.columns else [None] * n
        keys = [f"{c[0]}:{c[1]}:{c[2]}" if c is not None else (e if e is not None else f"row-{i}") for i, (c, e) in enumerate(zip(coords, ids))]
        return texts, tasks, private, tenants, sources, coords, keys

    def process(self, frame: pl.DataFrame) -> ModelBatchResult:
        """Add the result columns of :data:`MODEL_OUTPUT_SCHEMA` to ``frame`` (same rows, same order).

        Thread-safe: calls from several Bytewax worker threads sharing one service are serialized.
        """
        with self._lock:
            return self._process(frame)

    def _process(self, frame: pl.DataFrame) -> ModelBatchResult:
        n = frame.height
        if n == 0:
            return ModelBatchResult(frame.with_columns([pl.lit(None, t).alias(c) for c, t in model_output_schema().items()]), _NO_EVENTS)
        texts, tasks, private, tenants, sources, coords, keys = self._inputs(frame)
        rows = [_Row() for _ in range(n)]

        replayed: dict[int, dict[str, Any]] = {}
        if self.ledger is not None and self._has_remote and any(c is not None for c in coords):
            replayed = self.ledger.lookup(coords, self.config_hash)
        pending = [i for i in range(n) if i not in replayed]
        for tier in self.tiers:
            if not pending:
                break
            pending = self._run_tier(tier, pending, rows, texts, tasks, private, tenants, sources, keys, coords)
        for i in pending:  # only if the final rules tier itself crashed
            rows[i].answer = ModelResult.failure("internal", "no tier answered")
            rows[i].reasons.append("none:internal")
        results = self._with_route(self._assemble(frame, rows, tasks, replayed))
        self._commit(list(range(n)), rows, tasks, coords, tenants, sources)  # rows a remote tier failed and a later tier answered
        events = self.budgets.drain_events()
        for e in events:
            metrics.BUDGET_EVENTS.labels(scope=e.scope).inc()
            log.warning(orjson.dumps({"event": "model_budget_exhausted", "scope": e.scope, "tier": e.tier, "action": e.action, "day": e.day}).decode())
        return ModelBatchResult(results, budget_events_frame(events) if events else _NO_EVENTS)

    # ------------------------------------------------------------------
    def _skip(self, tier: Tier, i: int, row: _Row, reason: str) -> None:
        row.reasons.append(f"{tier.name}:{reason}")

    def _run_tier(
        self,
        tier: Tier,
        pending: list[int],
        rows: list[_Row],
        texts: list[str],
        tasks: list[str],
        private: list[bool],
        tenants: list[str | None],
        sources: list[str | None],
        keys: list[str],
        coords: list[Coord | None],
    ) -> list[int]:
        backend = tier.backend
        cfg = self.config
        remaining: list[int] = []
        todo: list[int] = []
        reserved: dict[int, float] = {}
        keys_by_row: dict[int, str] = {}  # cache key of each row looked up, reused to store its answer
        skipped: _Counter[str] = _Counter()
        for i in pending:
            row = rows[i]
            spec = self.tasks[tasks[i]]
            if not backend.supports(spec):
                self._skip(tier, i, row, "unsupported")
                skipped["unsupported"] += 1
                remaining.append(i)
                continue
            if backend.remote and private[i]:
                self._skip(tier, i, row, "privacy")
                skipped["privacy"] += 1
                remaining.append(i)
                continue
            if tier.priced:
                if row.price_floor is not None and (cfg.budgets.on_exhausted == "local" and backend.remote or tier.price_per_mtok >= row.price_floor):
                    self._skip(tier, i, row, "budget")
                    skipped["budget"] += 1
                    remaining.append(i)
                    continue
                est = self._estimate(tier, spec, texts[i])
                why = self.budgets.reserve(tenants[i], sources[i], est, tier=tier.name) if self.budgets.enabled else None
                if why is not None:
                    row.budget_event = why
                    row.price_floor = tier.price_per_mtok
                    self._skip(tier, i, row, "budget")
                    skipped["budget"] += 1
                    remaining.append(i)
                    continue
                reserved[i] = est
            if backend.remote and self.cache is not None:
                keys_by_row[i] = key = cache_key(tasks[i], spec.config.prompt_version, backend.model, texts[i])
                hit = self.cache.get(key)
                if hit is not None:
                    self._answer_cached(tier, row, hit)
                    if i in reserved:
                        self.budgets.settle(tenants[i], sources[i], reserved.pop(i), 0.0)
                    continue
            todo.append(i)
        lbl = {"backend": backend.kind, "model": backend.model or "unknown", "tier": tier.name}
        for reason, count in skipped.items():
            metrics.CALLS.labels(**lbl, outcome="skipped").inc(count)
            metrics.FALLBACKS.labels(tier=tier.name, reason=reason).inc(count)
        if not todo:
            return remaining
        requests = [ModelRequest(keys[i], texts[i], tasks[i]) for i in todo]
        errors: _Counter[str] = _Counter()
        ok = 0
        latency_hist = metrics.LATENCY.labels(**lbl)
        tok_in = tok_out = tok_cached = tok_reason = 0
        cost_sum = 0.0
        local_latency: float | None = None
        durable = self.ledger is not None and backend.remote
        for group in self._results(tier, requests):
            answered: list[int] = []
            for j, res in group:
                i = todo[j]
                row = rows[i]
                cost = call_cost(cfg.pricing, backend.model, input_tokens=res.input_tokens, output_tokens=res.output_tokens, cached_tokens=res.cached_tokens)
                if i in reserved:
                    self.budgets.settle(tenants[i], sources[i], reserved[i], cost)
                row.cost += cost
                row.cost_estimated |= res.tokens_estimated and cost > 0
                row.retries += res.retries
                row.latency += res.latency_ms
                cost_sum += cost
                tok_in += res.input_tokens
                tok_out += res.output_tokens
                tok_cached += res.cached_tokens
                tok_reason += res.reasoning_tokens
                if backend.remote and res.error_class != "circuit_open":
                    row.remote = True
                    latency_hist.observe(res.latency_ms / 1000.0)
                elif not backend.remote and local_latency is None:
                    local_latency = res.latency_ms  # this tier's own time, not the earlier tiers' as row.latency
                if res.ok:
                    ok += 1
                    row.answer = res
                    row.tier = tier
                    answered.append(i)
                    if backend.remote and self.cache is not None:
                        self.cache.put(
                            keys_by_row[i],
                            CachedAnswer(res.label, res.output, res.confidence, res.model_version, cost),
                        )
                else:
                    assert res.error_class is not None
                    errors[res.error_class] += 1
                    row.error_class = res.error_class
                    row.reasons.append(f"{tier.name}:{res.error_class}")
                    remaining.append(i)
            if durable and answered:
                # durable the moment the provider answered, while the rest of the batch is
                # still in flight: a crash from here on replays these rows from the ledger
                self._commit(answered, rows, tasks, coords, tenants, sources)
        if local_latency is not None:  # one observation per batch keeps the local path cheap
            latency_hist.observe(local_latency / 1000.0)
        if ok:
            metrics.CALLS.labels(**lbl, outcome="success").inc(ok)
        for cls, count in errors.items():
            metrics.CALLS.labels(**lbl, outcome="error").inc(count)
            metrics.ERRORS.labels(**lbl, error_class=cls).inc(count)
            metrics.FALLBACKS.labels(tier=tier.name, reason=cls).inc(count)
        if tok_in or tok_out:
            metrics.TOKENS.labels(**lbl, kind="input").inc(tok_in)
            metrics.TOKENS.labels(**lbl, kind="output").inc(tok_out)
            metrics.TOKENS.labels(**lbl, kind="cached").inc(tok_cached)
            metrics.TOKENS.labels(**lbl, kind="reasoning").inc(tok_reason)
        if cost_sum:
            metrics.COST.labels(**lbl).inc(cost_sum)
        if errors:
            log.warning(orjson.dumps({"event": "model_tier_failures", "tier": tier.name, "errors": dict(errors), "rows": len(todo)}).decode())
        remaining.sort()
        return remaining

    def _results(self, tier: Tier, requests: list[ModelRequest]) -> Iterator[list[tuple[int, ModelResult]]]:
        """Groups of ``(position, result)`` from the tier's backend as they complete; every
        position exactly once, whatever the backend does (a crash files the rest as ``internal``)."""
        backend = tier.backend
        breaker = getattr(backend, "breaker", None)
        if breaker is not None and not breaker.allow():
            yield [(j, ModelResult.failure("circuit_open", "circuit breaker is open", model_name=backend.model)) for j in range(len(requests))]
            return
        seen: set[int] = set()
        try:
            # a backend never gets more than one batch (max_rows) at a time unless it streams
            for group in backend.iter_batch(requests, self.config.batching.max_rows):
                fresh = [(j, r) for j, r in group if 0 <= j < len(requests) and j not in seen]
                if len(fresh) != len(group):
                    raise RuntimeError(f"backend yielded an unknown or repeated position in {[j for j, _ in group]}")
                seen.update(j for j, _ in fresh)
                yield fresh
            if len(seen) != len(requests):
                raise RuntimeError(f"backend returned {len(seen)} results for {len(requests)} requests")
        except Exception as exc:  # a bug in a backend must not drop events
            log.error(orjson.dumps({"event": "model_backend_crash", "tier": tier.name, "error": type(exc).__name__}).decode())
            yield [(j, ModelResult.failure("internal", type(exc).__name__, model_name=backend.model)) for j in range(len(requests)) if j not in seen]

    def estimate_cost(self, tier_name: str, task: str, text: str) -> float:
        """The cost reserved against budgets before ``text`` is sent to tier ``tier_name``."""
        tier = next(t for t in self.tiers if t.name == tier_name)
        return self._estimate(tier, self.tasks[task], text)

    def _estimate(self, tier: Tier, spec: TaskSpec, text: str) -> float:
        """Cost estimate used to reserve budget: estimated prompt tokens plus max output tokens."""
        overhead = self._prompt_chars.get(spec.name)
        if overhead is None:
            overhead = self._prompt_chars[spec.name] = len(spec.system_prompt()) + len(spec.config.user_prompt)
        return call_cost(
            self.config.pricing,
            tier.backend.model,
            input_tokens=estimate_tokens("x" * (overhead + len(text)), self.config.chars_per_token),
            output_tokens=tier.backend.config.max_output_tokens,
        )

    def _answer_cached(self, tier: Tier, row: _Row, hit: CachedAnswer) -> None:
        row.answer = ModelResult(label=hit.label, output=hit.output, confidence=hit.confidence, model_name=tier.backend.model, model_version=hit.model_version)
        row.tier = tier
        row.cached = True
        row.saved = hit.cost_usd
        lbl = {"backend": tier.backend.kind, "model": tier.backend.model or "unknown", "tier": tier.name}
        metrics.CALLS.labels(**lbl, outcome="cached").inc()
        if hit.cost_usd:
            metrics.COST_SAVED.labels(**lbl).inc(hit.cost_usd)

    # ------------------------------------------------------------------
    @staticmethod
    def _values(task: str, row: _Row) -> tuple[Any, ...]:
        """The result columns of one answered row, in :data:`MODEL_OUTPUT_SCHEMA` order."""
        a = row.answer
        assert a is not None
        tier = row.tier
        return (
            task,
            a.label,
            a.output,
            a.confidence,
            a.model_name,
            a.model_version,
            tier.name if tier else None,
            tier.index if tier else None,
            row.reasons,
            row.error_class,
            row.retries,
            a.input_tokens,
            a.output_tokens,
            a.cached_tokens,
            a.reasoning_tokens,
            a.tokens_estimated,
            round(row.latency, 3),
            round(row.cost, 10),
            row.cost_estimated,
            row.cached,
            round(row.saved, 10),
            False,
            row.budget_event,
        )

    def _with_route(self, results: pl.DataFrame) -> pl.DataFrame:
        """Add :data:`ROUTE_COLUMN`: the first tier named in the fallback reasons, else the answering tier."""
        reasons = pl.col("model_fallback_reasons")
        first_tier = pl.when(reasons.list.len().fill_null(0) > 0).then(reasons.list.first().str.split(":").list.first()).otherwise(pl.col("model_tier"))
        models = {t.name: t.backend.model for t in self.tiers}
        return results.with_columns(first_tier.replace_strict(models, default=pl.col("model_name"), return_dtype=pl.Utf8).alias(ROUTE_COLUMN))

    def _assemble(self, frame: pl.DataFrame, rows: list[_Row], tasks: list[str], replayed: dict[int, dict[str, Any]]) -> pl.DataFrame:
        n = len(rows)
        cols: dict[str, list[Any]] = {c: [None] * n for c in MODEL_OUTPUT_SCHEMA}
        for i, row in enumerate(rows):
            rec = replayed.get(i)
            if rec is not None:
                for c in _RECORDED:
                    cols[c][i] = rec.get(c)
                cols["model_replayed"][i] = True
                continue
            values = self._values(tasks[i], row)
            for c, v in zip(MODEL_OUTPUT_SCHEMA, values):
                cols[c][i] = v
            if row.remote and row.record is None:
                row.record = {c: cols[c][i] for c in _RECORDED}
        out = pl.DataFrame([_list_column("model_fallback_reasons", cols[c]) if c == "model_fallback_reasons" else pl.Series(c, cols[c], dtype=t) for c, t in MODEL_OUTPUT_SCHEMA.items()])
        if any(c in MODEL_OUTPUT_SCHEMA for c in frame.columns):
            frame = frame.select([c for c in frame.columns if c not in MODEL_OUTPUT_SCHEMA])
        return frame.hstack(out)

    def _commit(self, which: list[int], rows: list[_Row], tasks: list[str], coords: list[Coord | None], tenants: list[str | None], sources: list[str | None]) -> None:
        """Record the results of rows ``which`` that involved a remote call, with their spend, in one transaction."""
        if self.ledger is None:
            return
        day = self.budgets.day()
        spend: dict[tuple[str, str, str], float] = defaultdict(float)
        entries = []
        for i in which:
            row = rows[i]
            if not row.remote or row.committed:
                continue
            if row.record is None:
                values = dict(zip(MODEL_OUTPUT_SCHEMA, self._values(tasks[i], row)))
                row.record = {c: values[c] for c in _RECORDED}
            row.committed = True
            if coords[i] is not None:
                entries.append((coords[i], row.record))
            if row.cost:
                spend[(day, "tenant", tenants[i] or "")] += row.cost
                spend[(day, "source", sources[i] or "")] += row.cost
        self.ledger.record(entries, spend, now=self.clock.now().timestamp(), config_hash=self.config_hash)

    def close(self) -> None:
        for t in self.tiers:
            t.backend.close()
        if self.ledger is not None:
            self.ledger.close()
