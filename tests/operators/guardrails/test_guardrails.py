"""Output guardrails without a broker: each check, the decision, the hook in the model chain,
the evaluators, the window columns and the configuration errors."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest

from driftline.config import ConfigError, PipelineConfig, load_config
from driftline.config.models import LedgerConfig, ModelsConfig
from driftline.models import ModelService
from driftline.models.base import ModelBackend
from driftline.models.types import ModelResult
from driftline.operators.aggregate import WindowAccumulator, metrics_row, slice_frame
from driftline.operators.drift import FeatureProfile, ProfileFile, ReferenceProfile
from driftline.operators.guardrails import OutputGuard, guard_output_schema
from driftline.operators.pii import PiiMasker

KEY = b"0123456789abcdef"


def _guard(overrides: dict[str, Any] | None = None) -> tuple[OutputGuard, PipelineConfig]:
    cfg = load_config(None, env={}, overrides=overrides or {})
    return OutputGuard.from_config(cfg, PiiMasker.from_config(cfg.privacy, KEY)), cfg


def _answers(outputs: list[str | None], confidence: list[float | None] | None = None, **cols: list[Any]) -> pl.DataFrame:
    n = len(outputs)
    return pl.DataFrame({"output": outputs, "confidence": confidence or [0.9] * n, "task": ["summary"] * n, **cols}, schema_overrides={"output": pl.Utf8, "confidence": pl.Float64})


def _summary(text: str, conf: float | None = 0.9) -> str:
    return orjson.dumps({"summary": text, "confidence": conf}).decode()


def test_pii_in_nested_json_and_label_is_masked_json_stays_valid_and_counts_per_type() -> None:
    guard, _ = _guard()
    extraction = orjson.dumps({"contact": {"emails": ["a.b@example.com", "c@example.org"]}, "note": 'said "call +1 415 555 2671"\nthen card 4111\n1111 1111 1111'}).decode()
    c = guard.check(_answers([extraction, _summary("nothing here"), None], label=[None, None, "x@example.com"]))
    obj = orjson.loads(c.output[0])  # still JSON
    assert "example.com" not in c.output[0] and "4111" not in c.output[0] and "555 2671" not in c.output[0]
    assert obj["contact"]["emails"][0].startswith("<EMAIL:") and obj["note"].startswith('said "call <PHONE:')
    assert c.counts["EMAIL"].tolist() == [2, 0, 1] and c.counts["CREDIT_CARD"].tolist() == [1, 0, 0] and c.counts["PHONE"].tolist() == [1, 0, 0]
    assert c.label[2].startswith("<EMAIL:") and c.pii_total.tolist() == [4, 0, 1]
    assert c.rules[0] == ["output_pii:EMAIL", "output_pii:PHONE", "output_pii:CREDIT_CARD"]
    assert c.output[1] == _summary("nothing here")  # untouched answers keep their exact bytes


def test_actions_strictest_wins_and_refused_answers_are_dropped() -> None:
    guard, _ = _guard({"guardrails": {"output_pii": {"action": "mask", "actions": {"SECRET": "refuse", "CREDIT_CARD": "next_tier"}}}})
    key = "sk-proj-Zx8Qw3Er5Ty7Ui9Op1As2Df4Gh6Jk8Lz0Xc"
    c = guard.check(_answers([_summary(f"key {key} and a@b.org"), _summary("card 4111 1111 1111 1111"), _summary("mail a@b.org")]))
    assert c.decision == ["reject", "reject", "review"]
    assert c.retry.tolist() == [False, True, False]
    assert c.output[0] is None and c.confidence[0] == 0.0
    assert c.confidence[2] == pytest.approx(0.9 * 0.7)


def test_risk_categories_multiply_and_scope_input() -> None:
    guard, _ = _guard({"guardrails": {"risk": {"categories": {
        "medical": {"level": "critical", "patterns": [r"\bdiagnos"]},
        "financial": {"level": "high", "patterns": [r"\$\d"]},
        "crypto": {"level": "low", "patterns": ["bitcoin"], "scope": "input"},
    }}}})  # fmt: skip
    c = guard.check(_answers([_summary("Diagnosis: costs $40"), _summary("fine"), _summary("bitcoin")], [1.0, 1.0, 1.0], input=["x", "buy BITCOIN", "x"]))
    assert c.risk == [["medical", "financial"], ["crypto"], []]
    assert c.confidence.tolist() == pytest.approx([0.35, 0.95, 1.0])
    assert c.decision == ["reject", "accept", "accept"]


def test_output_rules_error_rejects_warn_lowers_and_read_json_fields() -> None:
    guard, _ = _guard({"guardrails": {"rules": [
        {"name": "no_refund_promise", "expr": "contains(lower(text), 'full refund')"},
        {"name": "big_amount", "expr": "output.amount > 1000", "severity": "warn", "factor": 0.8},
        {"name": "low_model_confidence", "expr": "confidence < 0.5 and task == 'summary'", "severity": "warn", "factor": 0.5},
    ]}})  # fmt: skip
    outs = [_summary("You get a FULL refund"), orjson.dumps({"amount": 5000, "confidence": 0.9}).decode(), orjson.dumps({"amount": "12", "confidence": 0.9}).decode(), _summary("ok", 0.4)]
    c = guard.check(_answers(outs, [0.9, 0.9, 0.9, 0.4]))
    assert c.rules == [["rule:no_refund_promise"], ["rule:big_amount"], [], ["rule:low_model_confidence"]]
    assert c.decision == ["reject", "review", "accept", "reject"]
    assert c.confidence.tolist() == pytest.approx([0.9, 0.72, 0.9, 0.2])
    assert c.retry.tolist() == [True, False, False, True]


def test_statistical_checks_against_the_reference_profile(tmp_path: Path) -> None:
    cfg0 = load_config(None, env={})
    conf = np.array([0.7, 0.8, 0.9, 0.95])
    ref = ReferenceProfile(
        "r",
        features={
            "model_label": FeatureProfile(name="model_label", kind="categorical", categories={"positive": 600, "negative": 398, "neutral": 2}),
            "model_confidence": FeatureProfile.from_multiset("model_confidence", conf, np.array([10, 40, 40, 10]), cfg0.monitoring.drift, mean=None, std=None),
        },
    )
    path = tmp_path / "profile.json"
    ProfileFile(key_dims=["source"], profiles={"source=reviews": ref}).save(path)
    guard, _ = _guard({"guardrails": {"statistical": {"profile_path": str(path), "min_label_share": 0.01, "confidence_quantile": 0.05}}})
    lab = orjson.dumps({"label": "x", "confidence": 0.9}).decode()
    c = guard.check(_answers([lab] * 4, [0.9, 0.9, 0.6, 0.9], label=["positive", "neutral", "negative", "positive"], source=["reviews", "reviews", "reviews", "other"]))
    assert c.rules == [[], ["statistical:rare_label"], ["statistical:low_confidence"], []]  # 'other' has no reference
    assert c.confidence.tolist() == pytest.approx([0.9, 0.81, 0.54, 0.9])


def test_over_budget_answers_are_refused_unscanned() -> None:
    guard, _ = _guard({"privacy": {"budget": {"max_candidates": 10}}})
    many = " ".join(f"u{i}@example.com" for i in range(50))
    c = guard.check(_answers([_summary(many), _summary("hello there")]))
    assert "output_pii:unscanned" in c.rules[0] and c.output[0] is None and c.decision[0] == "reject" and not c.retry[0]
    assert c.decision[1] == "accept"


class _Planted(ModelBackend):
    remote = True
    default_model = "planted"

    def call_batch(self, requests):  # noqa: ANN001, ANN201
        return [ModelResult(output=_summary("write to a@example.org" if "mail" in r.text else "The diagnosis is flu" if "flu" in r.text else "all good", 0.95), confidence=0.95, model_name=self.model) for r in requests]


class _Honest(ModelBackend):
    remote = True
    default_model = "honest"

    def call_batch(self, requests):  # noqa: ANN001, ANN201
        return [ModelResult(output=_summary("a plain summary", 0.85), confidence=0.85, model_name=self.model) for r in requests]


@pytest.mark.parametrize("fall_through", ["remote", "none"])
def test_rejected_answers_fall_through_to_the_next_tier(fall_through: str) -> None:
    guard, cfg = _guard({"guardrails": {"fall_through": fall_through, "output_pii": {"actions": {"EMAIL": "next_tier"}}}})
    mcfg = ModelsConfig.model_validate(
        {"task": "summary", "tasks": {"summary": {"kind": "summarization"}}, "chain": ["a", "b", "rules"], "ledger": {"enabled": False},
         "backends": {"a": {"kind": "openai", "model": "planted", "base_url": "http://127.0.0.1:9/v1"}, "b": {"kind": "openai", "model": "honest", "base_url": "http://127.0.0.1:9/v1"}, "rules": {"kind": "rules"}}}
    )  # fmt: skip
    from driftline.config.models import BackendConfig
    from driftline.models.prompts import TaskSpec

    specs = {"summary": TaskSpec("summary", mcfg.tasks["summary"])}
    svc = ModelService(mcfg, backends={"a": _Planted("a", BackendConfig(kind="x"), specs), "b": _Honest("b", BackendConfig(kind="x"), specs)}, answer_check=guard.tier_check())
    frame = pl.DataFrame({"text": ["send mail", "flu again", "fine"]})
    out = guard.apply(svc.process(frame).results, guard_output_schema(cfg))
    svc.close()
    if fall_through == "remote":
        assert out["model_tier"].to_list() == ["b", "b", "a"]
        assert out["model_fallback_reasons"].to_list() == [["a:rejected:output_pii:EMAIL"], ["a:rejected:risk:medical"], []]
        assert out["model_error_class"].to_list() == ["rejected", "rejected", None]
        assert out["guard_decision"].to_list() == ["accept", "accept", "accept"]
    else:  # decided, not retried
        assert out["model_tier"].to_list() == ["a", "a", "a"]
        assert out["guard_decision"].to_list() == ["reject", "reject", "accept"]
        assert out["guard_rules"].to_list() == [["output_pii:EMAIL"], ["risk:medical"], []]
        assert "a@example.org" not in (out["model_output"][0] or "")


def test_local_answers_are_final_unless_fall_through_all() -> None:
    guard, cfg = _guard({"guardrails": {"fall_through": "all", "thresholds": {"accept": 0.99, "review": 0.98}}})
    svc = ModelService(ModelsConfig(ledger=LedgerConfig(enabled=False)), answer_check=guard.tier_check())
    out = svc.process(pl.DataFrame({"text": ["great service, thanks!"]})).results
    assert out["model_tier"][0] == "rules" and out["model_fallback_reasons"][0].to_list() == ["local:rejected:confidence"]
    guard2, _ = _guard({"guardrails": {"thresholds": {"accept": 0.99, "review": 0.98}}})
    svc2 = ModelService(ModelsConfig(ledger=LedgerConfig(enabled=False)), answer_check=guard2.tier_check())
    assert svc2.process(pl.DataFrame({"text": ["great service, thanks!"]})).results["model_tier"][0] == "local"


def test_evaluators_and_window_columns() -> None:
    guard, cfg = _guard()
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    scored = pl.DataFrame(
        {
            "event_time": [t] * 4, "source": ["s"] * 4, "model_name": ["m"] * 4, "model_task": ["sentiment"] * 4, "model_tier": ["local", "local", "local", "rules"],
            "model_label": ["positive", "negative", "bogus", "positive"], "model_confidence": [0.95, 0.9, 0.9, 0.5],
            "model_output": [orjson.dumps({"label": lab, "confidence": 0.9}).decode() for lab in ("positive", "negative", "bogus", "positive")],
            "text": ["thanks, great help", "thanks, great help", "ok", "great"],
        }
    )  # fmt: skip
    out = guard.apply(scored, guard_output_schema(cfg))
    assert out["eval_label_allowed"].to_list() == [1.0, 1.0, 0.0, 1.0]
    # the rules tier says positive for "thanks, great help": agreeing at 0.95 costs 0.0025, disagreeing at 0.9 costs 0.81
    assert out["eval_calibration"].to_list()[:2] == pytest.approx([0.0025, 0.81]) and out["eval_calibration"][3] is None
    assert out["eval_output_pii"].to_list() == [0.0] * 4 and out["eval_risk"].to_list() == [0.0] * 4
    assert out["guard_decision"].to_list() == ["accept", "accept", "accept", "reject"]
    acc = WindowAccumulator.empty(cfg.monitoring)
    for sl in slice_frame(out, cfg.monitoring):
        acc.merge(sl.acc)
    row = metrics_row(acc, t, t, ("s", "m"), cfg.monitoring)
    assert row["guard_rejects"] == 1 and row["guard_reject_rate"] == 0.25 and row["guard_reviews"] == 0
    assert row["eval_calibration_mean"] == pytest.approx((0.0025 + 0.81 + out["eval_calibration"][2]) / 3)
    assert row["output_pii_total"] == 0 and row["guard_confidence_mean"] == pytest.approx(out["guard_confidence"].mean())


def test_configuration_errors_name_the_key() -> None:
    bad = [
        ({"guardrails": {"risk": {"categories": {"x": {"level": "extreme", "patterns": ["a"]}}}}}, "guardrails.risk"),
        ({"guardrails": {"risk": {"categories": {"x": {"level": "low", "patterns": ["(?=a)"]}}}}}, "guardrails.risk.categories.x.patterns"),
        ({"guardrails": {"rules": [{"name": "r", "expr": "attributes.x == 1"}]}}, "guardrails.rules[0].expr"),
        ({"guardrails": {"evaluators": ["nope"]}}, "guardrails.evaluators"),
        ({"guardrails": {"thresholds": {"accept": 0.5, "review": 0.7}}}, "guardrails.thresholds"),
        ({"guardrails": {"output_pii": {"actions": {"NAME": "refuse"}}}}, "guardrails.output_pii.actions"),
        ({"monitoring": {"alerts": {"rules": [{"name": "r", "metric": "guard_nothing", "threshold": 1}]}}}, "monitoring.alerts.rules[0]"),
        ({"tracing": {"endpoint": "grpc://x"}}, "tracing.endpoint"),
    ]
    for overrides, key in bad:
        with pytest.raises(ConfigError) as e:
            load_config(None, env={}, overrides=overrides)
        assert key in str(e.value), (key, str(e.value))
    ok = load_config(None, env={}, overrides={"monitoring": {"alerts": {"rules": [{"name": "r", "metric": "guard_review_rate", "threshold": 0.2}]}}})
    assert ok.monitoring.alerts.rules[0].metric == "guard_review_rate"


def test_calibration_reads_the_same_label_as_the_rules_tier() -> None:
    from driftline.config.models import BackendConfig, TaskConfig
    from driftline.models.prompts import TaskSpec
    from driftline.models.rules import RulesBackend
    from driftline.models.types import ModelRequest
    from driftline.operators.guardrails.evaluators import Calibration, EvalContext
    from driftline.producer import SyntheticProducer

    tasks = {
        "sentiment": TaskSpec("sentiment", TaskConfig()),
        "topic": TaskSpec("topic", TaskConfig(kind="classification", categories=["billing", "shipping", "refund"], default_category="billing")),
    }
    texts = [e.record["text"] for e in SyntheticProducer(5, pii_rate=0.2).events(600) if isinstance(e.record, dict) and isinstance(e.record.get("text"), str)]
    texts += ["", "Don't LOVE it; refund, refund... shipping!", "good123 bad's ÉGOOD great", "breakfast translated", "no keyword here"]
    task = [("sentiment", "topic")[i % 2] for i in range(len(texts))]
    rules = RulesBackend("rules", BackendConfig(kind="rules"), tasks)
    want = [r.label for r in rules.call_batch([ModelRequest("", t, k) for t, k in zip(texts, task)])]
    got = Calibration(EvalContext(tasks)).rules_labels(pl.DataFrame({"input": texts, "task": task}))
    assert got.to_list() == want


def test_answers_longer_than_the_budget_keep_their_masked_head() -> None:
    guard, _ = _guard({"privacy": {"budget": {"max_chars": 1024}}})
    c = guard.check(_answers([_summary("x " * 600 + " mail a@b.org")]))
    assert c.rules[0] == ["output_cut"] and orjson.loads(c.output[0])["summary"].endswith("[cut]") and "a@b.org" not in c.output[0]


def test_apply_columns_are_the_checks_per_row() -> None:
    """The stage's columns (built without a Python list per row) hold what :meth:`check`
    lists per row, with repeated, refused, masked and missing answers in one batch."""
    guard, cfg = _guard({"guardrails": {
        "output_pii": {"actions": {"SECRET": "refuse"}},
        "risk": {"categories": {"medical": {"level": "critical", "patterns": [r"\bdiagnos"]}, "crypto": {"level": "low", "patterns": ["bitcoin"], "scope": "input"}}},
        "rules": [{"name": "low", "expr": "confidence < 0.5", "severity": "warn", "factor": 0.5}],
    }})  # fmt: skip
    key = "sk-proj-Zx8Qw3Er5Ty7Ui9Op1As2Df4Gh6Jk8Lz0Xc"
    pool = [_summary("Diagnosis: flu, mail a@b.org"), _summary(f"key {key}"), _summary("all good"), None, "not json a@b.org", _summary("fine", 0.3)]
    outputs = [pool[i % len(pool)] for i in range(40)]
    labels = [None if i % 4 else "x@example.com" for i in range(40)]
    scored = pl.DataFrame(
        {
            "model_output": outputs, "model_label": labels, "model_confidence": [0.9 if i % 3 else 0.4 for i in range(40)],
            "model_task": ["summary"] * 40, "model_tier": [("local" if i % 2 else None) for i in range(40)],
            "model_input": [("buy bitcoin" if i % 5 == 0 else "hello") for i in range(40)],
        },
        schema_overrides={"model_output": pl.Utf8, "model_label": pl.Utf8, "model_tier": pl.Utf8},
    )  # fmt: skip
    answers = pl.DataFrame({"output": outputs, "label": labels, "confidence": scored["model_confidence"], "task": scored["model_task"], "tier": scored["model_tier"], "input": scored["model_input"]})
    c = guard.check(answers)
    out = guard.apply(scored, guard_output_schema(cfg))
    assert out["model_output"].to_list() == c.output and out["model_label"].to_list() == c.label
    assert out["guard_decision"].to_list() == c.decision and out["guard_confidence"].to_list() == c.confidence.tolist()
    assert out["guard_rules"].to_list() == c.rules and out["guard_risk"].to_list() == c.risk
    assert out.schema["guard_rules"] == pl.List(pl.Utf8) and out.schema["guard_risk"] == pl.List(pl.Utf8)
    assert {len(r) for r in c.rules} >= {0, 1, 2} and any(r == [] for r in c.risk) and any(c.risk)  # every shape is covered
    assert out["output_pii_total"].to_list() == c.pii_total.tolist()
    assert out.head(0).pipe(guard.apply, guard_output_schema(cfg)).schema == out.schema
