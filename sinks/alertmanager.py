"""The alerts active now: exported as a gauge and kept alive in Alertmanager.

:class:`ActiveAlertsSink` receives the alert rows of the window step (``firing`` and
``resolved`` transitions, :func:`driftline.operators.alerts.alerts_schema`) and keeps the
set of alerts firing now, one per rule and key.  That set:

- is exported as ``driftline_active_alerts{rule, severity}`` (keys firing per rule);
- when ``monitoring.alerts.alertmanager_urls`` is set, is POSTed to each Alertmanager's
  ``/api/v2/alerts`` at once on every change and **re-sent every
  ``resend_interval_seconds`` (60) while active**, like Prometheus does: Alertmanager
  marks an alert that is not re-sent within its ``resolve_timeout`` (5 min by default)
  as resolved, so a long incident would otherwise look over after five minutes.  A
  resolved alert is sent once more with ``endsAt`` (its resolving window's end, or now if
  that lies ahead), then forgotten.  An ``Authorization`` header
  (``alertmanager_authorization``, a secret: ``Bearer <token>`` or ``Basic <base64>``)
  goes with every POST;
- is the partition's snapshot, so after a restart the alerts still active are re-sent
  (and not resolved by Alertmanager's timeout while the flow was down briefly).

Labels of an Alertmanager alert: ``alertname`` (the rule), ``rule``, ``severity``,
``pipeline="driftline"`` and the window key dimensions (``source``, ``model``...);
annotations: summary, description, value, threshold, window, detail, ``alert_id``.
The rule's windows are event time: ``startsAt`` is the start of the window where the
alert fired.  Each POST carries ``X-Driftline-Delivery-Id``, a hash of the alert ids it
holds (the same for every re-send of the same set).

**Delivery guarantee: at least once, re-sent while active.**  The network is only touched
by a background thread, so an Alertmanager that is down never stalls the dataflow; it
gets the active set again every few seconds until it answers.

>>> from datetime import datetime, timedelta, timezone
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> row = {"rule": "error_rate_high", "key": "source=a|model=m", "source": "a", "model": "m", "state": "resolved",
...        "severity": "critical", "window_start": t, "window_end": t + timedelta(minutes=1), "started_at": t,
...        "comparison": ">", "threshold": 0.05, "value": 0.0, "alert_id": "x"}
>>> a = alertmanager_alert(row, MonitoringConfig())
>>> a["labels"]["alertname"], a["labels"]["source"], a["startsAt"], a["endsAt"]
('error_rate_high', 'a', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z')
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import polars as pl
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from driftline.clock import Clock, SystemClock
from driftline.config.monitoring import MonitoringConfig
from driftline.metrics import ACTIVE_ALERTS
from driftline.sinks.webhook import DELIVERY_HEADER, PARTITION, DeliveryLoop, Poster, alert_rows, delivery_id


def _iso(t: Any) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if isinstance(t, datetime) else None


def alertmanager_alert(a: Mapping[str, Any], cfg: MonitoringConfig, *, now: datetime | None = None) -> dict[str, Any]:
    """One alert row as an Alertmanager v2 alert: no ``endsAt`` while firing; ``endsAt`` =
    the resolving window's end (at most ``now``) when resolved."""
    labels = {"alertname": a["rule"], "rule": a["rule"], "severity": a["severity"], "pipeline": "driftline"}
    labels.update({d: str(a.get(d)) for d in cfg.key_dims if a.get(d) is not None})
    value = a.get("value")
    item: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": f"{a['rule']} {a['state']} for {a['key']}",
            "description": a.get("description") or "",
            "value": "" if value is None else f"{value:.6g}",
            "threshold": f"{a['comparison']} {a['threshold']:.6g}",
            "window": f"{_iso(a['window_start'])}/{_iso(a['window_end'])}",
            "detail": a.get("detail") or "",
            "alert_id": a.get("alert_id") or "",
        },
        "startsAt": _iso(a.get("started_at") or a["window_start"]),
        "generatorURL": cfg.alerts.generator_url,
    }
    if a["state"] == "resolved":
        end = a["window_end"]
        item["endsAt"] = _iso(min(end, now) if now is not None else end)
    return item


@dataclass
class ActiveAlertsState:
    """Snapshot of :class:`ActiveAlertsSink`: the firing alert row per ``rule|key``, and the
    resolved ones Alertmanager has not acknowledged yet."""

    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)


def _alert_key(row: Mapping[str, Any]) -> str:
    return f"{row['rule']}|{row['key']}"


class _ActivePartition(StatefulSinkPartition[pl.DataFrame, ActiveAlertsState]):
    def __init__(self, sink: ActiveAlertsSink, state: ActiveAlertsState | None) -> None:
        self.sink = sink
        self.state = state or ActiveAlertsState()
        self._lock = threading.Lock()
        self._posters = [sink.poster(url) for url in sink.urls]
        self._counted: set[tuple[str, str]] = set()
        self._export()
        self._loop = DeliveryLoop("driftline-alertmanager", self._deliver, interval=sink.resend_seconds, retry_after=sink.retry_seconds) if self._posters else None
        if self._loop is not None and (self.state.active or self.state.resolved):
            self._loop.wake()

    def write_batch(self, items: list[pl.DataFrame]) -> None:
        rows = alert_rows(items)
        if not rows:
            return
        with self._lock:
            for row in rows:
                k = _alert_key(row)
                if row["state"] == "firing":
                    self.state.active[k] = row
                    self.state.resolved.pop(k, None)
                elif row["state"] == "resolved":
                    self.state.active.pop(k, None)
                    if self._loop is not None:
                        self.state.resolved[k] = row
            self._export()
        if self._loop is not None:
            self._loop.wake()

    def _export(self) -> None:
        """``driftline_active_alerts``: keys firing per (rule, severity); series of rules no longer firing go to 0."""
        counts: dict[tuple[str, str], int] = {}
        for row in self.state.active.values():
            rs = (row["rule"], row["severity"])
            counts[rs] = counts.get(rs, 0) + 1
        for rs in self._counted | set(counts):
            ACTIVE_ALERTS.labels(*rs).set(counts.get(rs, 0))
        self._counted |= set(counts)

    def _deliver(self) -> bool:
        with self._lock:
            rows = list(self.state.active.values()) + list(self.state.resolved.values())
            resolved = dict(self.state.resolved)
        if not rows:
            return True
        now = self.sink.clock.now()
        body = json.dumps([alertmanager_alert(r, self.sink.cfg, now=now) for r in rows], sort_keys=True).encode()
        headers = self.sink.headers([str(r.get("alert_id") or "") for r in rows])
        ok = all([p.post(body, lambda: headers, "alertmanager_post") != "retry" for p in self._posters])
        if ok:
            with self._lock:  # acknowledged by every Alertmanager: forget them (unless they fired again meanwhile)
                for k, row in resolved.items():
                    if self.state.resolved.get(k) is row:
                        del self.state.resolved[k]
        return ok

    def snapshot(self) -> ActiveAlertsState:
        with self._lock:
            return copy.deepcopy(self.state)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._deliver()  # the end of a drained run: resolved alerts still unsent go out now
        for p in self._posters:
            p.close()


class ActiveAlertsSink(FixedPartitionedSink[pl.DataFrame, ActiveAlertsState]):
    """Bytewax sink of alert frames keeping the active set (see the module docstring).
    Items are ``("alerts", frame)``; one partition, so one worker holds the set.

    ``client`` and ``clock`` are for tests; ``retry_seconds`` is how soon a failed POST is tried again.
    """

    def __init__(self, cfg: MonitoringConfig, *, client: httpx.Client | None = None, clock: Clock | None = None, retry_seconds: float = 5.0) -> None:
        a = cfg.alerts
        self.cfg = cfg
        self.urls = [u.rstrip("/") + "/api/v2/alerts" for u in a.alertmanager_urls]
        self.authorization = a.alertmanager_authorization.get_secret_value() if a.alertmanager_authorization is not None else None
        self.resend_seconds = a.resend_interval_seconds
        self.retry_seconds = retry_seconds
        self.client = client
        self.clock: Clock = clock or SystemClock()

    def poster(self, url: str) -> Poster:
        return Poster(url, timeout=self.cfg.alerts.alertmanager_timeout_seconds, retries=1, client=self.client)

    def headers(self, ids: list[str]) -> dict[str, str]:
        h = {"Content-Type": "application/json", DELIVERY_HEADER: delivery_id(ids)}
        if self.authorization:
            h["Authorization"] = self.authorization
        return h

    def list_parts(self) -> list[str]:
        return [PARTITION]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: ActiveAlertsState | None) -> _ActivePartition:
        return _ActivePartition(self, resume_state)


__all__ = ["ActiveAlertsSink", "ActiveAlertsState", "alertmanager_alert"]
