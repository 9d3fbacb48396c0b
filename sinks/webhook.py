"""Alert transitions to a webhook: signed JSON, or a chat message for Slack-style webhooks.

Each alert row (:func:`driftline.operators.alerts.alerts_schema`, ``firing`` or
``resolved``) is POSTed once to ``monitoring.alerts.webhook_url``:

- ``webhook_format: json``: a JSON list of Alertmanager-v2-shaped alerts
  (:func:`driftline.sinks.alertmanager.alertmanager_alert`), signed;
- ``webhook_format: slack``: ``{"text": ...}``, one line per alert, for Slack-compatible
  incoming webhooks (Slack, Mattermost, Rocket.Chat), signed the same way.

**Signature.** With a secret (``monitoring.alerts.webhook_secret``) every POST carries
``X-Driftline-Timestamp: <unix seconds>`` and ``X-Driftline-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<body>``.  A receiver recomputes it and refuses a timestamp
further than ``webhook_signature_tolerance_seconds`` (300) from its clock, so a captured
request cannot be replayed later (:func:`verify` does both).  Each attempt is signed
anew; ``X-Driftline-Delivery-Id`` (a hash of the alert ids) stays the same across
attempts, restarts and replays, so receivers drop what they have seen.

**Delivery guarantee: at least once.**  Rows are queued by ``write_batch`` (which never
blocks the dataflow on the network) and POSTed by a background thread, in order, with
``webhook_retries`` quick retries (back-off 0.5 s, 1 s, 2 s...) on 5xx, 429 and network
errors, then again every few seconds until they go through (a 4xx other than 429 drops
the delivery with a log line: the receiver refuses it).  The queue is the partition's
snapshot, so transitions not yet delivered survive a restart; a replay after a crash may
post a transition again, with the same ids.

>>> body = b'[{"labels": {}}]'
>>> sig = sign(body, b"k", 1767225600)
>>> verify(body, b"k", sig, "1767225600", now=1767225650.0), verify(body, b"k", sig, "1767225600", now=1767226000.0)
(True, False)
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import polars as pl
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from driftline.clock import Clock, SystemClock
from driftline.config.monitoring import MonitoringConfig

log = logging.getLogger("driftline.alerts")

DELIVERY_HEADER = "X-Driftline-Delivery-Id"
PARTITION = "alerts"
"""Alerts are few: every alert sink has one partition, so one worker holds their state."""


def sign(body: bytes, secret: bytes, timestamp: int) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    return "sha256=" + hmac.new(secret, str(int(timestamp)).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: bytes, signature: str, timestamp: str, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """A receiver's check: the signature matches (constant time) and ``timestamp`` is within
    ``tolerance`` seconds of ``now`` (default: the receiver's clock)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(body, secret, ts), signature)


def delivery_id(alert_ids: Sequence[str]) -> str:
    """Stable id of one delivery: a hash of the (sorted) alert ids it carries."""
    return hashlib.sha256("|".join(sorted(alert_ids)).encode()).hexdigest()[:32]


def alert_rows(frames: Sequence[pl.DataFrame]) -> list[dict[str, Any]]:
    """Alert frames as rows (dicts), in order."""
    return [r for f in frames for r in f.iter_rows(named=True)]


def _iso(t: Any) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if isinstance(t, datetime) else None


def slack_message(alerts: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """A chat message (``{"text": ...}``) for Slack-compatible incoming webhooks: one line per alert.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> slack_message([{"rule": "error_rate_high", "state": "firing", "severity": "critical", "key": "source=a",
    ...                 "value": 0.5, "comparison": ">", "threshold": 0.05, "window_start": t, "window_end": t, "detail": None}])["text"]
    ':rotating_light: *CRITICAL* `error_rate_high` firing for `source=a`: 0.5 > 0.05 (window 2026-01-01T00:00:00Z to 2026-01-01T00:00:00Z)'
    """
    lines = []
    for a in alerts:
        firing = a["state"] == "firing"
        icon, level = (":rotating_light:", str(a["severity"]).upper()) if firing else (":white_check_mark:", "RESOLVED")
        value = "unknown" if a.get("value") is None else f"{a['value']:.6g}"
        detail = f" ({a['detail']})" if a.get("detail") else ""
        lines.append(
            f"{icon} *{level}* `{a['rule']}` {a['state']} for `{a['key']}`{detail}: {value} {a['comparison']} {a['threshold']:.6g} "
            f"(window {_iso(a['window_start'])} to {_iso(a['window_end'])})"
        )
    return {"text": "\n".join(lines)}


class Poster:
    """POSTs one body with retries and exponential back-off; never raises.

    ``headers`` is called per attempt (a fresh signing timestamp each time).  Returns
    ``"ok"``, ``"retry"`` (5xx, 429, network: try again later) or ``"refused"`` (another
    4xx: the receiver will not take it).
    """

    def __init__(self, url: str, *, timeout: float, retries: int, client: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url
        self.retries = retries
        self._own = client is None
        self.client = client or httpx.Client(timeout=timeout)
        self.sleep = sleep

    def post(self, body: bytes, headers: Callable[[], dict[str, str]], what: str) -> str:
        delay = 0.5
        reason = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.post(self.url, content=body, headers=headers())
                if 200 <= resp.status_code < 300:
                    return "ok"
                if resp.status_code < 500 and resp.status_code != 429:
                    log.warning(json.dumps({"event": f"{what}_refused", "status": resp.status_code, "url": _redact(self.url)}))
                    return "refused"
                reason = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt < self.retries:
                self.sleep(delay)
                delay *= 2
        log.warning(json.dumps({"event": f"{what}_failed", "reason": reason, "url": _redact(self.url)}))
        return "retry"

    def close(self) -> None:
        if self._own:
            self.client.close()


def _redact(url: str) -> str:
    """The URL without its path and query (chat webhook URLs carry their token in the path)."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}{':' + str(parsed.port) if parsed.port else ''}/..."


class DeliveryLoop:
    """A daemon thread calling ``deliver()`` when woken and at least every ``interval`` seconds;
    ``deliver`` returns whether everything went through (if not, it is called again after
    ``retry_after`` seconds)."""

    def __init__(self, name: str, deliver: Callable[[], bool], interval: float, retry_after: float) -> None:
        self.deliver = deliver
        self.interval = interval
        self.retry_after = min(retry_after, interval)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                wait = self.interval if self.deliver() else self.retry_after
            except Exception as exc:  # a bug here must not kill the loop silently
                log.error(json.dumps({"event": "alert_delivery_error", "error": type(exc).__name__}))
                wait = self.retry_after

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)


@dataclass
class WebhookState:
    """Snapshot of the webhook sink: transitions not yet delivered, in order."""

    pending: list[dict[str, Any]] = field(default_factory=list)


class _WebhookPartition(StatefulSinkPartition[pl.DataFrame, WebhookState]):
    def __init__(self, sink: WebhookSink, state: WebhookState | None) -> None:
        self.sink = sink
        self.state = state or WebhookState()
        self._lock = threading.Lock()
        self._poster = sink.poster()
        self._loop = DeliveryLoop("driftline-webhook", self._deliver, interval=sink.retry_seconds, retry_after=sink.retry_seconds)
        if self.state.pending:
            self._loop.wake()

    def write_batch(self, items: list[pl.DataFrame]) -> None:
        rows = alert_rows(items)
        if rows:
            with self._lock:
                self.state.pending.extend(rows)
            self._loop.wake()

    def _deliver(self) -> bool:
        with self._lock:
            batch = list(self.state.pending)
        if not batch:
            return True
        outcome = self.sink.send(self._poster, batch)
        if outcome != "retry":
            with self._lock:
                del self.state.pending[: len(batch)]
        return outcome == "ok"

    def snapshot(self) -> WebhookState:
        with self._lock:
            return copy.deepcopy(self.state)

    def close(self) -> None:
        self._loop.stop()
        self._deliver()  # the end of a drained run: one last round
        self._poster.close()


class WebhookSink(FixedPartitionedSink[pl.DataFrame, WebhookState]):
    """Bytewax sink POSTing alert frames to ``monitoring.alerts.webhook_url`` (see the module
    docstring: format, signature, at-least-once delivery).  Items are ``("alerts", frame)``.

    ``client`` and ``clock`` are for tests (a real HTTP client to a loopback receiver, a fake clock).
    """

    def __init__(self, cfg: MonitoringConfig, *, secret: bytes | None = None, client: httpx.Client | None = None, clock: Clock | None = None, retry_seconds: float = 5.0) -> None:
        a = cfg.alerts
        if not a.webhook_url:
            raise ValueError("monitoring.alerts.webhook_url is not set")
        self.cfg = cfg
        if secret is None and a.webhook_secret is not None:
            secret = a.webhook_secret.get_secret_value().encode()
        self.secret = secret
        self.client = client
        self.clock: Clock = clock or SystemClock()
        self.retry_seconds = retry_seconds

    def poster(self) -> Poster:
        a = self.cfg.alerts
        assert a.webhook_url is not None
        return Poster(a.webhook_url, timeout=a.webhook_timeout_seconds, retries=a.webhook_retries, client=self.client)

    def body(self, alerts: Sequence[Mapping[str, Any]]) -> bytes:
        from driftline.sinks.alertmanager import alertmanager_alert

        if self.cfg.alerts.webhook_format == "slack":
            return json.dumps(slack_message(alerts)).encode()
        return json.dumps([alertmanager_alert(a, self.cfg) for a in alerts], sort_keys=True).encode()

    def headers(self, body: bytes, ids: Sequence[str]) -> Callable[[], dict[str, str]]:
        a = self.cfg.alerts
        fixed = {"Content-Type": "application/json", DELIVERY_HEADER: delivery_id(ids)}

        def make() -> dict[str, str]:
            if not self.secret:
                return fixed
            ts = int(self.clock.now().timestamp())
            return {**fixed, a.webhook_timestamp_header: str(ts), a.webhook_signature_header: sign(body, self.secret, ts)}

        return make

    def send(self, poster: Poster, alerts: Sequence[Mapping[str, Any]]) -> str:
        """POST ``alerts`` in one request; ``"ok"``, ``"retry"`` or ``"refused"``."""
        body = self.body(alerts)
        return poster.post(body, self.headers(body, [str(a.get("alert_id") or "") for a in alerts]), "alert_webhook")

    def list_parts(self) -> list[str]:
        return [PARTITION]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: WebhookState | None) -> _WebhookPartition:
        return _WebhookPartition(self, resume_state)


__all__ = ["DELIVERY_HEADER", "DeliveryLoop", "Poster", "WebhookSink", "WebhookState", "alert_rows", "delivery_id", "sign", "slack_message", "verify"]
