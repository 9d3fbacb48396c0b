"""Alert rules over window metrics rows: fire once, cool down, resolve.

Each rule (``monitoring.alerts.rules``) names a registered *kind*, a metric, a
comparison, a threshold and a severity.  For every metrics row and rule the engine
evaluates the condition for that rule and the row's key:

- condition starts: a ``firing`` alert, unless the same rule and key fired less than
  ``cooldown_seconds`` before (measured in event time, window end to window end, so a
  replay raises exactly the same alerts); a suppressed condition fires as soon as the
  cool-down has passed while it still holds;
- condition holds: nothing more (an alert fires once);
- condition clears: a ``resolved`` alert for a firing one;
- metric unknown (null, e.g. drift during warm-up, or fewer calls than ``min_calls``):
  no change.

Rule kinds are registered functions ``(rule, row) -> (value, detail) | None``; adding
one is one decorated function::

    @register_rule_kind("my_kind")
    def _my_kind(rule, row): return row.get(rule.metric), None

Alerts go to the alerts topic and dataset as rows of :func:`alerts_schema`; delivery
to Alertmanager and webhooks is the sinks' job (:mod:`driftline.sinks.alertmanager`,
:mod:`driftline.sinks.webhook`): this module is the rules' pure logic.  Every alert
carries ``alert_id``, a hash of its rule, key, window and transition: the same alert
raised again (a replay after a crash) has the same id, so receivers drop repeats.

>>> from datetime import datetime, timedelta, timezone
>>> from driftline.config.monitoring import MonitoringConfig
>>> from driftline.clock import FakeClock
>>> eng = AlertEngine(MonitoringConfig(), FakeClock())
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> row = {"key": "source=a|model=m", "window_start": t, "window_end": t + timedelta(minutes=1),
...        "model_calls": 10, "error_rate": 0.2, "drift": []}
>>> [(a["rule"], a["state"]) for a in eng.evaluate(row)]
[('error_rate_high', 'firing')]
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from driftline.clock import Clock
from driftline.config.monitoring import AlertRule, MonitoringConfig
from driftline.operators.aggregate.rows import pipeline_version
from driftline.operators.batch import TIME_DTYPE

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

RuleKind = Callable[[AlertRule, Mapping[str, Any]], "tuple[float, str | None] | None"]
RULE_KINDS: dict[str, RuleKind] = {}


def register_rule_kind(name: str) -> Callable[[RuleKind], RuleKind]:
    """Register a rule kind: a function returning ``(value, detail)`` or ``None`` when unknown."""

    def deco(fn: RuleKind) -> RuleKind:
        RULE_KINDS[name] = fn
        return fn

    return deco


@register_rule_kind("threshold")
def _threshold(rule: AlertRule, row: Mapping[str, Any]) -> tuple[float, str | None] | None:
    value = row.get(rule.metric)
    return None if value is None else (float(value), None)


@register_rule_kind("drift")
def _drift(rule: AlertRule, row: Mapping[str, Any]) -> tuple[float, str | None] | None:
    best: tuple[float, str | None] | None = None
    for entry in row.get("drift") or []:
        v = entry.get(rule.metric)
        if v is not None and (best is None or v > best[0]):
            best = (float(v), entry.get("feature"))
    return best


def alerts_schema(cfg: MonitoringConfig) -> dict[str, pl.DataType]:
    """Columns of the ``alerts`` dataset and topic rows; natural key (rule, key, window_start, state)."""
    schema: dict[str, pl.DataType] = {
        "rule": pl.Utf8,
        "key": pl.Utf8,
        "window_start": TIME_DTYPE,
        "window_end": TIME_DTYPE,
        "state": pl.Utf8,
    }
    for dim in cfg.key_dims:
        schema[dim] = pl.Utf8
    schema.update(
        {
            "kind": pl.Utf8,
            "metric": pl.Utf8,
            "comparison": pl.Utf8,
            "threshold": pl.Float64,
            "value": pl.Float64,
            "detail": pl.Utf8,
            "severity": pl.Utf8,
            "description": pl.Utf8,
            "started_at": TIME_DTYPE,
            "fired_at": TIME_DTYPE,
            "reference_id": pl.Utf8,
            "pipeline_version": pl.Utf8,
            "alert_id": pl.Utf8,
        }
    )
    return schema


def alert_id(rule: str, key: str, window_start: datetime, window_end: datetime, state: str) -> str:
    """Stable id of one alert transition (rule, key, window, firing/resolved): 32 hex digits.

    >>> from datetime import timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> alert_id("r", "source=a", t, t + timedelta(minutes=1), "firing") == alert_id("r", "source=a", t, t + timedelta(minutes=1), "firing")
    True
    """
    text = "|".join((rule, key, window_start.isoformat(), window_end.isoformat(), state))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(slots=True)
class RuleKeyState:
    """Where one rule stands for one key."""

    firing: bool = False
    started_at: datetime | None = None  # window_start when it fired
    last_fired_end: datetime | None = None  # window_end when it last fired (cool-down base)


@dataclass(slots=True)
class AlertState:
    """Snapshot-able engine state: one :class:`RuleKeyState` per ``rule|key``."""

    entries: dict[str, RuleKeyState] = field(default_factory=dict)


class AlertEngine:
    """Evaluates every rule on every metrics row (``on_row``), holding firing state per rule and key."""

    def __init__(self, cfg: MonitoringConfig, clock: Clock, state: AlertState | None = None) -> None:
        self.cfg = cfg
        self.rules = list(cfg.alerts.rules)
        for i, r in enumerate(self.rules):
            if r.kind not in RULE_KINDS:
                raise ValueError(f"monitoring.alerts.rules[{i}].kind: unknown rule kind {r.kind!r}; registered: {', '.join(sorted(RULE_KINDS))}")
        self.cooldown = timedelta(seconds=cfg.alerts.cooldown_seconds)
        self.clock = clock
        self.state = state or AlertState()

    def _alert(self, rule: AlertRule, row: Mapping[str, Any], st: RuleKeyState, state: str, value: float | None, detail: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": rule.name,
            "key": row["key"],
            "window_start": row["window_start"],
            "window_end": row["window_end"],
            "state": state,
        }
        for dim in self.cfg.key_dims:
            out[dim] = row.get(dim)
        out.update(
            {
                "kind": rule.kind,
                "metric": rule.metric,
                "comparison": rule.comparison,
                "threshold": rule.threshold,
                "value": value,
                "detail": detail,
                "severity": rule.severity,
                "description": rule.description,
                "started_at": st.started_at,
                "fired_at": self.clock.now(),
                "reference_id": row.get("reference_id"),
                "pipeline_version": pipeline_version(self.cfg),
                "alert_id": alert_id(rule.name, row["key"], row["window_start"], row["window_end"], state),
            }
        )
        return out

    def evaluate(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Alert rows (firing or resolved) raised by one metrics row."""
        out: list[dict[str, Any]] = []
        for rule in self.rules:
            sk = f"{rule.name}|{row['key']}"
            st = self.state.entries.get(sk) or RuleKeyState()
            if rule.min_calls and (row.get("model_calls") or 0) < rule.min_calls:
                continue
            got = RULE_KINDS[rule.kind](rule, row)
            if got is None:
                continue
            value, detail = got
            holds = COMPARE[rule.comparison](value, rule.threshold)
            end: datetime = row["window_end"]
            if holds and not st.firing:
                if st.last_fired_end is None or end - st.last_fired_end >= self.cooldown:
                    st.firing = True
                    st.started_at = row["window_start"]
                    st.last_fired_end = end
                    out.append(self._alert(rule, row, st, "firing", value, detail))
            elif not holds and st.firing:
                st.firing = False
                out.append(self._alert(rule, row, st, "resolved", value, detail))
            self.state.entries[sk] = st
        return out


__all__ = [
    "AlertEngine",
    "AlertState",
    "RULE_KINDS",
    "RuleKeyState",
    "alert_id",
    "alerts_schema",
    "register_rule_kind",
]
