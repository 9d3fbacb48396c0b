"""Alert engine state machine (delivery: tests/sinks/test_alert_delivery.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from driftline.clock import FakeClock
from driftline.config import ConfigError, load_config
from driftline.config.monitoring import MonitoringConfig
from driftline.operators.alerts import AlertEngine, register_rule_kind, RULE_KINDS

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def row(minute: int, **stats: Any) -> dict[str, Any]:
    start = T0 + timedelta(minutes=minute)
    base = {"key": "source=a|model=m", "source": "a", "model": "m", "window_start": start, "window_end": start + timedelta(minutes=1), "model_calls": 100, "drift": []}
    base.update(stats)
    return base


def states(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a["rule"], a["state"]) for a in alerts]


def test_fires_once_resolves_and_respects_cooldown() -> None:
    eng = AlertEngine(MonitoringConfig(), FakeClock())
    assert states(eng.evaluate(row(0, latency_p95_ms=100.0))) == []
    assert states(eng.evaluate(row(1, latency_p95_ms=2500.0))) == [("latency_p95_high", "firing")]
    assert states(eng.evaluate(row(2, latency_p95_ms=3000.0))) == []  # once
    assert states(eng.evaluate(row(3, latency_p95_ms=None))) == []  # unknown: no change
    assert states(eng.evaluate(row(4, latency_p95_ms=100.0))) == [("latency_p95_high", "resolved")]
    assert states(eng.evaluate(row(5, latency_p95_ms=2500.0))) == []  # within 15 min cool-down
    assert states(eng.evaluate(row(6, latency_p95_ms=100.0))) == []  # never re-fired: nothing to resolve
    assert states(eng.evaluate(row(17, latency_p95_ms=2500.0))) == [("latency_p95_high", "firing")]


def test_every_default_rule_and_drift_kind() -> None:
    eng = AlertEngine(MonitoringConfig(), FakeClock())
    bad = row(
        0,
        latency_p95_ms=2100.0,
        latency_p99_ms=5100.0,
        error_rate=0.06,
        cost_per_request_usd=0.02,
        confidence_drift_rel=0.11,
        budget_exhausted_calls=1,
        drift=[{"feature": "f_chars", "psi": 0.1}, {"feature": "f_lang", "psi": 0.3}],
    )
    fired = eng.evaluate(bad)
    assert sorted(a["rule"] for a in fired) == sorted(r.name for r in MonitoringConfig().alerts.rules)
    psi_alert = next(a for a in fired if a["rule"] == "feature_psi_high")
    assert psi_alert["detail"] == "f_lang" and psi_alert["value"] == 0.3
    good = row(1, latency_p95_ms=1.0, latency_p99_ms=1.0, error_rate=0.0, cost_per_request_usd=0.001, confidence_drift_rel=0.0, budget_exhausted_calls=0, drift=[{"feature": "f_lang", "psi": 0.01}])
    assert sorted(s for _, s in states(eng.evaluate(good))) == ["resolved"] * 7


def test_min_calls_skips_windows_without_calls() -> None:
    eng = AlertEngine(MonitoringConfig(), FakeClock())
    assert eng.evaluate(row(0, model_calls=0, error_rate=None)) == []


def test_bad_rules_fail_at_startup_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"monitoring.alerts.rules\[0\].*no_such_metric"):
        load_config(None, env={}, overrides={"monitoring": {"alerts": {"rules": [{"name": "x", "metric": "no_such_metric", "threshold": 1}]}}})
    with pytest.raises(ConfigError, match="comparison"):
        load_config(None, env={}, overrides={"monitoring": {"alerts": {"rules": [{"name": "x", "metric": "errors", "comparison": "~", "threshold": 1}]}}})


def test_registered_kind_is_one_function() -> None:
    @register_rule_kind("double_errors")
    def _double(rule, r):  # type: ignore[no-untyped-def]
        return (2.0 * r["errors"], None) if r.get("errors") is not None else None

    try:
        cfg = MonitoringConfig.model_construct(**{**MonitoringConfig().__dict__})
        rule = MonitoringConfig().alerts.rules[0].model_copy(update={"name": "dbl", "kind": "double_errors", "metric": "errors", "threshold": 5.0, "min_calls": 0})
        cfg.alerts = cfg.alerts.model_copy(update={"rules": [rule]})
        eng = AlertEngine(cfg, FakeClock())
        assert states(eng.evaluate(row(0, errors=3))) == [("dbl", "firing")]
    finally:
        RULE_KINDS.pop("double_errors")


def test_a_registered_rule_kind_is_accepted_by_the_configuration() -> None:
    """Adding a rule kind is one decorated function: configuration accepts its name and
    the engine runs it; an unregistered kind still fails when the engine is built."""
    from driftline.operators.alerts import RULE_KINDS, register_rule_kind

    @register_rule_kind("test_double_rate")
    def _double(rule, row):  # type: ignore[no-untyped-def]
        v = row.get(rule.metric)
        return None if v is None else (2 * float(v), None)

    try:
        cfg = MonitoringConfig(alerts={"rules": [{"name": "doubled", "kind": "test_double_rate", "metric": "error_rate", "threshold": 0.5}]})
        AlertEngine(cfg, FakeClock())
        bad = MonitoringConfig(alerts={"rules": [{"name": "nope", "kind": "no_such_kind", "metric": "error_rate", "threshold": 0.5}]})
        with pytest.raises(ValueError, match="unknown rule kind 'no_such_kind'"):
            AlertEngine(bad, FakeClock())
    finally:
        RULE_KINDS.pop("test_double_rate", None)
