"""The output guardrails: every answer is checked, masked and decided on before it is
stored or sent, a whole micro-batch at a time.

For a batch of answers (:data:`ANSWER_COLUMNS`):

1. **text fields**: the string values of the answer's JSON (a summary, extracted fields)
   and its label are read once per row (orjson), the distinct ones scanned together by
   the privacy stage's recognizers (:meth:`PiiMasker.scan`: the same PII and secret
   recognizers, normalised detection view and budget as inputs); every finding is masked
   in the answer (the JSON is rebuilt with the masked values, so it stays valid) and
   counted per type.  A value over the privacy budget cannot be checked: its answer is
   refused (``output_pii:unscanned``); one longer than ``privacy.budget.max_chars`` keeps
   its masked head (``output_cut``);
2. **risk categories**: each category's patterns (one Rust regex alternation, searched
   case-insensitively in the masked answer text and/or the model input) put the answer
   in the category, and its level's factor multiplies the confidence;
3. **business rules** over the answer (``guardrails.rules``, compiled by the validation
   stage's safe expression compiler): ``error`` rejects, ``warn`` multiplies by ``factor``;
4. **statistical checks** against the drift reference profile: a label the reference
   rarely saw, or a confidence below its low quantile, multiplies by ``factor``;
5. **decision**: the model's confidence (``missing_confidence`` when it gave none) times
   every factor is ``guard_confidence``; ``accept`` at or above ``thresholds.accept``,
   ``review`` at or above ``thresholds.review``, else ``reject``.  An error rule, or PII
   whose action is ``next_tier``, rejects; PII whose action is ``refuse`` (or an unscanned
   value) rejects and drops the answer (label and output null, confidence 0).

``guard_rules`` lists every check that fired, by name, like the recognizers' findings
name their recognizer.  The same checks run inside the model stage on each tier's
answers (:meth:`OutputGuard.answer_check`), so a rejected answer is retried on the next
tier as a failed call is (:mod:`driftline.models.answer_check`).

>>> from driftline.config import load_config
>>> from driftline.operators.pii import PiiMasker
>>> cfg = load_config(None, env={})
>>> guard = OutputGuard.from_config(cfg, PiiMasker.from_config(cfg.privacy, key=b"0123456789abcdef"))
>>> answers = pl.DataFrame({"output": ['{"summary": "Write to ann@example.org", "confidence": 0.9}', '{"summary": "The diagnosis is flu", "confidence": 0.9}'],
...                         "confidence": [0.9, 0.9], "task": ["summary", "summary"]})
>>> out = guard.check(answers)
>>> out.decision, out.confidence.round(3).tolist(), out.rules
(['review', 'reject'], [0.63, 0.45], [['output_pii:EMAIL'], ['risk:medical']])
>>> "ann@example.org" in out.output[0]
False
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl

from driftline.config import PipelineConfig
from driftline.config.guardrails import OUTPUT_RULE_FIELDS, GuardrailsConfig
from driftline.models.prompts import TaskSpec
from driftline.operators.batch import names_where
from driftline.operators.drift import ProfileFile
from driftline.operators.guardrails import metrics
from driftline.operators.guardrails.evaluators import EvalBatch, EvalContext, Evaluator, build_evaluators, eval_column
from driftline.operators.pii import PiiMasker, entity_column
from driftline.operators.pii.operator import entities_for
from driftline.operators.validation.rules import CompiledRule, attribute_column, compile_rule

log = logging.getLogger("driftline.guardrails")

#: Columns of the answers frame the checks read (missing ones count as null).
ANSWER_COLUMNS: dict[str, pl.DataType] = {
    "label": pl.Utf8,
    "output": pl.Utf8,
    "confidence": pl.Float64,
    "task": pl.Utf8,
    "tier": pl.Utf8,
    "model": pl.Utf8,
    "input": pl.Utf8,
    "source": pl.Utf8,
    "tenant": pl.Utf8,
    "route": pl.Utf8,
}
#: Where the stage finds each answer column in the scored rows.
SCORED_COLUMNS = {
    "label": "model_label",
    "output": "model_output",
    "confidence": "model_confidence",
    "task": "model_task",
    "tier": "model_tier",
    "model": "model_name",
    "input": "model_input",
    "source": "source",
    "tenant": "tenant",
    "route": "model_route",
}
DECISIONS = ("accept", "review", "reject")
UNSCANNED = "<UNSCANNED>"
_PII_ORDER = {"mask": 0, "next_tier": 1, "refuse": 2}


def output_pii_column(entity: str) -> str:
    """``EMAIL`` -> ``output_pii_email``."""
    return "output_" + entity_column(entity)


def guard_output_schema(cfg: PipelineConfig) -> dict[str, pl.DataType]:
    """Columns the stage adds to the scored rows (stable for a configuration)."""
    schema: dict[str, pl.DataType] = {
        "guard_decision": pl.Utf8,
        "guard_confidence": pl.Float64,
        "guard_rules": pl.List(pl.Utf8),
        "guard_risk": pl.List(pl.Utf8),
    }
    schema.update({output_pii_column(e): pl.Int32 for e in entities_for(cfg.privacy)})
    schema["output_pii_total"] = pl.Int32
    schema.update({eval_column(n): pl.Float64 for n in cfg.guardrails.evaluators})
    return schema


@dataclass(slots=True)
class Checked:
    """What the checks found in a batch of answers (row order kept).

    ``output``/``label``: masked (null where refused); ``counts``: entity -> findings per
    row; ``risk``: categories per row; ``rules``: every check that fired, per row;
    ``retry``: a rejected answer the next tier may replace (False for refused ones).
    """

    output: list[str | None]
    label: list[str | None]
    text: list[str]
    counts: dict[str, np.ndarray]
    pii_total: np.ndarray
    risk: list[list[str]]
    risk_factor: np.ndarray
    rules: list[list[str]]
    confidence: np.ndarray
    decision: list[str]
    retry: np.ndarray


@dataclass(slots=True)
class _Found:
    """What :meth:`OutputGuard._run` found, as columns: ``fired`` maps each check that fired
    to its rows (in the order ``guard_rules`` lists them), ``risk_hits`` each risk category;
    ``level`` indexes :data:`DECISIONS`."""

    n: int
    output: pl.Series
    label: pl.Series
    text: pl.Series
    counts: dict[str, np.ndarray]
    pii_total: np.ndarray
    fired: dict[str, np.ndarray]
    risk_hits: list[tuple[str, np.ndarray]]
    risk_factor: np.ndarray
    confidence: np.ndarray
    level: np.ndarray
    retry: np.ndarray


def _per_row(n: int, named: list[tuple[str, np.ndarray]]) -> list[list[str]]:
    """The names whose mask holds each row, in the order given."""
    rows: list[list[str]] = [[] for _ in range(n)]
    for name, mask in named:
        for i in np.flatnonzero(mask):
            rows[i].append(name)
    return rows


class OutputGuard:
    """The checks of ``guardrails`` built once at start-up (patterns and rules compiled,
    the reference profile loaded, evaluators built); immutable afterwards, shared by workers."""

    def __init__(
        self,
        cfg: GuardrailsConfig,
        masker: PiiMasker,
        tasks: Mapping[str, TaskSpec],
        *,
        profile: ProfileFile | None = None,
        label_feature: str = "model_label",
        confidence_feature: str = "model_confidence",
        evaluators: Sequence[Evaluator] = (),
    ) -> None:
        self.cfg = cfg
        self.masker = masker
        self.tasks = tasks
        self.entities = masker.entities
        actions = cfg.output_pii.actions
        self._pii_action = {e: actions.get(e, cfg.output_pii.action) for e in self.entities}
        self._risk = [(name, f"(?i)(?:{'|'.join(c.patterns)})", c.scope, cfg.risk.levels[c.level]) for name, c in cfg.risk.categories.items()]
        self._rules: list[tuple[str, CompiledRule, str, float]] = [
            (r.name, compile_rule(r.expr, fields=OUTPUT_RULE_FIELDS, namespace="output"), r.severity, r.factor) for r in cfg.rules
        ]
        self.profile = profile
        self._label_feature = label_feature
        self._confidence_feature = confidence_feature
        self._conf_floor: dict[str, float | None] = {}
        self.evaluators = list(evaluators)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, masker: PiiMasker) -> OutputGuard:
        """Build the guard; raises naming the bad key (unknown entity, unreadable profile)."""
        g = cfg.guardrails
        missing = sorted(set(g.output_pii.actions) - set(masker.entities))
        if missing:
            raise ValueError(f"guardrails.output_pii.actions: entity type(s) {missing} are produced by no recognizer")
        tasks = {name: TaskSpec(name, t) for name, t in cfg.models.tasks.items()}
        path = g.statistical.profile_path or (cfg.monitoring.drift.profile_path if cfg.monitoring.drift.reference == "profile" else None)
        profile = ProfileFile.load(path) if g.statistical.enabled and path else None
        if g.enabled and g.statistical.enabled and profile is None:
            log.info(orjson.dumps({"event": "guardrails_statistical_off", "why": "no reference profile (guardrails.statistical.profile_path or monitoring.drift.profile_path)"}).decode())
        cols = cfg.monitoring.columns
        return cls(
            g, masker, tasks, profile=profile, label_feature=cols.label, confidence_feature=cols.confidence,
            evaluators=build_evaluators(g.evaluators, EvalContext(tasks)),
        )  # fmt: skip

    # ------------------------------------------------------------------ the checks
    def check(self, answers: pl.DataFrame) -> Checked:
        """Run every check over a frame of answers (columns of :data:`ANSWER_COLUMNS`)."""
        f = self._run(answers)
        return Checked(
            output=f.output.to_list(), label=f.label.to_list(), text=f.text.to_list(), counts=f.counts, pii_total=f.pii_total,
            risk=_per_row(f.n, f.risk_hits), risk_factor=f.risk_factor, rules=_per_row(f.n, list(f.fired.items())),
            confidence=f.confidence, decision=[DECISIONS[i] for i in f.level], retry=f.retry,
        )  # fmt: skip

    def _run(self, answers: pl.DataFrame) -> _Found:
        """The checks, column by column (see :meth:`check`)."""
        a = _conform(answers)
        n = a.height
        cfg = self.cfg
        out, lab, text, counts, unscanned, cut = self._mask(a["output"], a["label"])
        pii_total = np.sum(list(counts.values()), axis=0, dtype=np.int32) if counts else np.zeros(n, np.int32)
        fired: dict[str, np.ndarray] = {}
        for e, c in counts.items():
            if c.any():
                fired[f"output_pii:{e}"] = c > 0
        if unscanned.any():
            fired["output_pii:unscanned"] = unscanned
        if cut.any():  # a value longer than privacy.budget.max_chars keeps its masked head only
            fired["output_cut"] = cut
        factor = np.ones(n)
        masked_pii = np.zeros(n, dtype=bool)
        action = np.zeros(n, dtype=np.int8)  # 0 mask, 1 next_tier, 2 refuse
        for e, c in counts.items():
            has = c > 0
            if has.any():
                np.maximum(action, np.where(has, _PII_ORDER[self._pii_action[e]], 0).astype(np.int8), out=action)
                masked_pii |= has
        action[unscanned] = 2
        factor[masked_pii & (action == 0)] *= cfg.output_pii.factor

        tframe = a.with_columns(text.alias("text"), out.alias("output"), lab.alias("label"))
        risk_factor = np.ones(n)
        risk_hits: list[tuple[str, np.ndarray]] = []
        if self._risk and n:
            exprs = []
            for name, rx, scope, _f in self._risk:
                cols = {"output": ["text"], "input": ["input"], "both": ["text", "input"]}[scope]
                exprs.append(pl.any_horizontal([pl.col(c).str.contains(rx).fill_null(False) for c in cols]).alias(name))
            hits = tframe.select(exprs)
            for name, _rx, _scope, f in self._risk:
                h = hits[name].to_numpy()
                if h.any():
                    risk_hits.append((name, h))
                    fired[f"risk:{name}"] = h
                    risk_factor[h] *= f
        factor *= risk_factor

        error = np.zeros(n, dtype=bool)
        if self._rules and n:
            keys = sorted({k for _, r, _, _ in self._rules for k in r.attributes})
            rf = tframe.with_columns([pl.col("output").str.json_path_match(f"$[{orjson.dumps(k).decode()}]").alias(attribute_column(k)) for k in keys])
            hits = rf.select([r.expr.alias(name) for name, r, _, _ in self._rules])
            for name, _r, severity, f in self._rules:
                h = hits[name].to_numpy()
                if h.any():
                    fired[f"rule:{name}"] = h
                    if severity == "error":
                        error |= h
                    else:
                        factor[h] *= f

        for name, h in self._statistical(a).items():
            fired[f"statistical:{name}"] = h
            factor[h] *= cfg.statistical.factor

        base = a["confidence"].fill_null(cfg.missing_confidence).fill_nan(cfg.missing_confidence).to_numpy().astype(np.float64)
        no_answer = a.select(pl.col("label").is_null() & pl.col("output").is_null()).to_series().to_numpy()
        if no_answer.any():
            fired["no_answer"] = no_answer
        refused = action == 2
        conf = np.clip(base * factor, 0.0, 1.0)
        conf[no_answer | refused] = 0.0  # no answer kept: nothing to be confident about
        t = cfg.thresholds
        level = np.where(conf >= t.accept, 0, np.where(conf >= t.review, 1, 2))
        level[error | (action >= 1) | no_answer] = 2
        retry = (level == 2) & ~refused & ~no_answer
        if refused.any():
            dropped = pl.Series(refused)
            out = pl.select(pl.when(dropped).then(None).otherwise(out)).to_series().alias("output")
            lab = pl.select(pl.when(dropped).then(None).otherwise(lab)).to_series().alias("label")
        return _Found(n, out, lab, text, counts, pii_total, fired, risk_hits, risk_factor, conf, level, retry)

    def _mask(self, outputs: pl.Series, labels: pl.Series) -> tuple[pl.Series, pl.Series, pl.Series, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Masked output, label and text fields of each answer, findings per entity, unscanned
        and cut flags.  A batch repeats its answers (a local model's are a function of its
        score): each distinct (output, label) pair is parsed and masked once."""
        pairs = pl.DataFrame({"output": outputs, "label": labels}, schema={"output": pl.Utf8, "label": pl.Utf8})
        distinct = pairs.unique(maintain_order=True)
        idx = pairs.join(distinct.with_row_index("k"), on=["output", "label"], how="left", nulls_equal=True, maintain_order="left")["k"].to_numpy()
        out, lab, text, counts, unscanned, cut = self._mask_distinct(distinct["output"].to_list(), distinct["label"].to_list())
        gather = pl.Series(idx)
        return (
            pl.Series("output", out, dtype=pl.Utf8).gather(gather),
            pl.Series("label", lab, dtype=pl.Utf8).gather(gather),
            pl.Series("text", text, dtype=pl.Utf8).gather(gather),
            {e: c[idx] for e, c in counts.items()},
            unscanned[idx],
            cut[idx],
        )

    def _mask_distinct(
        self, outputs: list[str | None], labels: list[str | None]
    ) -> tuple[list[str | None], list[str | None], list[str], dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """:meth:`_mask` of distinct answers (one scan of their distinct values)."""
        n = len(outputs)
        objs: list[Any] = []
        row_of: list[int] = []
        values: list[str] = []
        for i, (o, label) in enumerate(zip(outputs, labels)):
            obj = _parse(o)
            objs.append(obj)
            start = len(values)
            _strings(obj, values)
            if label is not None and label not in values[start:]:
                values.append(label)
            row_of.extend([i] * (len(values) - start))
        uniq = list(dict.fromkeys(values))
        counts = {e: np.zeros(n, np.int32) for e in self.entities}
        unscanned = np.zeros(n, dtype=bool)
        cut = np.zeros(n, dtype=bool)
        if not uniq:
            return list(outputs), list(labels), [""] * n, counts, unscanned, cut
        index = {v: j for j, v in enumerate(uniq)}
        scan = self.masker.scan(pl.Series(uniq, dtype=pl.Utf8), rule_rows=0)  # DLP rules are for inputs
        masked = [UNSCANNED if m is None else m for m in scan.masked.to_list()]
        rows = np.asarray(row_of, dtype=np.int64)
        vidx = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
        for e, c in scan.counts.items():
            if c.any():
                counts[e] = np.bincount(rows, weights=c[vidx], minlength=n).astype(np.int32)
        if scan.over_budget.any():
            unscanned[np.unique(rows[scan.over_budget[vidx]])] = True
        if scan.cut.any():
            cut[np.unique(rows[scan.cut[vidx]])] = True
        changed = {v: m for v, m in zip(uniq, masked) if m != v}
        out = list(outputs)
        lab = list(labels)
        text: list[str] = [""] * n
        per_row: list[list[str]] = [[] for _ in range(n)]
        for r, v in zip(row_of, values):
            per_row[r].append(changed.get(v, v))
        for i in range(n):
            text[i] = "\n".join(per_row[i])
        if changed:
            dirty = {int(r) for r, v in zip(row_of, values) if v in changed}
            for i in dirty:
                obj = objs[i]
                if isinstance(obj, str):  # an answer that is not JSON: masked as one string
                    out[i] = changed.get(obj, obj)
                elif obj is not None:
                    out[i] = orjson.dumps(_replace(obj, changed)).decode()
                if lab[i] is not None:
                    lab[i] = changed.get(lab[i], lab[i])  # type: ignore[arg-type]
        return out, lab, text, counts, unscanned, cut

    def _statistical(self, a: pl.DataFrame) -> dict[str, np.ndarray]:
        """Rows whose label or confidence is unusual for the reference of their key."""
        prof = self.profile
        if prof is None or a.height == 0:
            return {}
        st = self.cfg.statistical
        dims = prof.key_dims
        cols = {"model": "route", "source": "source", "tenant": "tenant", "task": "task", "tier": "tier"}
        keys = a.select(pl.concat_str([pl.lit(f"{d}=") + pl.col(cols.get(d, d)).fill_null("unknown") if cols.get(d, d) in a.columns else pl.lit(f"{d}=unknown") for d in dims], separator="|").alias("k"))["k"] if dims else pl.Series([""] * a.height)
        rare = np.zeros(a.height, dtype=bool)
        low = np.zeros(a.height, dtype=bool)
        labels = a["label"]
        conf = a["confidence"].to_numpy()
        for key in keys.unique().to_list():
            ref = prof.for_key(key)
            if ref is None:
                continue
            sel = (keys == key).to_numpy()
            lf = ref.features.get(self._label_feature)
            if lf is not None and lf.categories:
                total = sum(lf.categories.values())
                shares = {k: v / total for k, v in lf.categories.items()}
                share = labels.filter(pl.Series(sel)).replace_strict(shares, default=0.0, return_dtype=pl.Float64)
                has_label = labels.filter(pl.Series(sel)).is_not_null().to_numpy()
                rare[sel] = (share.to_numpy() < st.min_label_share) & has_label
            floor = self._floor(key, ref)
            if floor is not None:
                c = conf[sel]
                low[sel] = ~np.isnan(c) & (c < floor)
        return {name: h for name, h in (("rare_label", rare), ("low_confidence", low)) if h.any()}

    def _floor(self, key: str, ref: Any) -> float | None:
        if key not in self._conf_floor:
            cf = ref.features.get(self._confidence_feature)
            floor = None
            if cf is not None and cf.kind == "numeric" and cf.support.size:
                cum = np.cumsum(cf.weights)
                floor = float(cf.support[min(int(np.searchsorted(cum, self.cfg.statistical.confidence_quantile * cum[-1], side="left")), cf.support.size - 1)])
            self._conf_floor[key] = floor
        return self._conf_floor[key]

    # ------------------------------------------------------------------ uses
    def apply(self, frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
        """The stage: ``frame`` (scored rows) with its answers masked and the columns of
        ``schema`` (:func:`guard_output_schema`) added."""
        if frame.height == 0 or not self.cfg.enabled:
            return frame.with_columns([pl.lit(None, t).alias(c) for c, t in schema.items()])
        answers = frame.select([(pl.col(src) if src in frame.columns else pl.lit(None)).cast(ANSWER_COLUMNS[dst]).alias(dst) for dst, src in SCORED_COLUMNS.items()])
        if "model_input" not in frame.columns and "text" in frame.columns:
            answers = answers.with_columns(frame["text"].alias("input"))
        c = self._run(answers)
        n = frame.height
        cols: list[pl.Series] = [
            c.output.alias("model_output"),
            c.label.alias("model_label"),
            pl.Series("guard_decision", c.level.astype(np.int8)).replace_strict(dict(enumerate(DECISIONS)), return_dtype=pl.Utf8),
            pl.Series("guard_confidence", c.confidence, dtype=pl.Float64),
            names_where("guard_rules", n, list(c.fired.items())),
            names_where("guard_risk", n, c.risk_hits),
        ]
        for e in self.entities:
            cols.append(pl.Series(output_pii_column(e), c.counts.get(e, np.zeros(n, np.int32)), dtype=pl.Int32))
        cols.append(pl.Series("output_pii_total", c.pii_total, dtype=pl.Int32))
        if self.evaluators:
            batch = EvalBatch(answers.with_columns(c.text.alias("text"), c.label.alias("label")), c.pii_total, c.risk_factor)
            for ev in self.evaluators:
                cols.append(ev.score(batch).cast(pl.Float64).rename(eval_column(ev.name)))
        out = frame.with_columns(cols)
        missing = [pl.lit(None, t).alias(k) for k, t in schema.items() if k not in out.columns]
        _observe(answers["tier"], c)
        return out.with_columns(missing) if missing else out

    def answer_check(self, answers: pl.DataFrame) -> list[str | None]:
        """For the model stage: per answer, why the next tier should answer instead (None: keep it)."""
        c = self.check(answers)
        verdicts = [(r[0] if r else "confidence") if retry else None for r, retry in zip(c.rules, c.retry.tolist())]
        rejected = sum(v is not None for v in verdicts)
        if rejected:
            metrics.FALL_THROUGHS.labels(tier=answers["tier"][0] or "none").inc(rejected)
        return verdicts

    def tier_check(self) -> TierCheck | None:
        """The model service's :class:`~driftline.models.answer_check.AnswerCheck` (None when
        guardrails are off or ``fall_through: none``)."""
        if not self.cfg.enabled or self.cfg.fall_through == "none":
            return None
        return TierCheck(self, local_too=self.cfg.fall_through == "all")


class TierCheck:
    """Checks the answers of every tier but the rules tier (and local tiers unless ``local_too``)."""

    def __init__(self, guard: OutputGuard, *, local_too: bool) -> None:
        self.guard = guard
        self.local_too = local_too

    def applies(self, tier: Any) -> bool:
        return tier.backend.kind != "rules" and (self.local_too or tier.backend.remote)

    def __call__(self, answers: pl.DataFrame) -> list[str | None]:
        return self.guard.answer_check(answers)


def _observe(tiers: pl.Series, c: _Found) -> None:
    """Decisions per tier, checks fired and output PII found, added to the metrics."""
    if c.n:
        names = tiers.fill_null("none")
        if names.n_unique() == 1:  # the usual batch: one tier answered every row
            per = [(d, names[0], int(k)) for d, k in enumerate(np.bincount(c.level, minlength=len(DECISIONS))) if k]
        else:
            per = list(pl.DataFrame({"d": c.level.astype(np.int8), "t": names}).group_by("d", "t").len().iter_rows())
        for d, t, k in per:
            metrics.DECISIONS.labels(decision=DECISIONS[d], tier=t).inc(k)
    for r, mask in c.fired.items():
        metrics.FINDINGS.labels(check=r).inc(int(np.count_nonzero(mask)))
    for e, counts in c.counts.items():
        total = int(counts.sum())
        if total:
            metrics.OUTPUT_PII.labels(entity=e).inc(total)


def _conform(answers: pl.DataFrame) -> pl.DataFrame:
    have = set(answers.columns)
    return answers.select([(pl.col(c) if c in have else pl.lit(None)).cast(t).alias(c) for c, t in ANSWER_COLUMNS.items()])


def _parse(output: str | None) -> Any:
    if output is None:
        return None
    try:
        return orjson.loads(output)
    except orjson.JSONDecodeError:
        return output  # not JSON: the whole answer is one text


def _strings(obj: Any, out: list[str]) -> None:
    """Append the string values of ``obj`` (depth first, in order)."""
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _strings(v, out)


def _replace(obj: Any, changed: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        return changed.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _replace(v, changed) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace(v, changed) for v in obj]
    return obj
