"""Alert delivery sinks against a real loopback HTTP receiver: the signed webhook (JSON and
chat formats, timestamped HMAC, retries, stable delivery ids) and the active-alert set
(Alertmanager v2 payloads re-sent while active, endsAt on resolve, Authorization header,
state across a restart, the active-alerts gauge).  The real Alertmanager binary is in
tests/deploy/test_operations_e2e.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
from prometheus_client import REGISTRY

from driftline.clock import FakeClock
from driftline.config import load_config
from driftline.config.monitoring import MonitoringConfig
from driftline.operators.aggregate.rows import rows_frame
from driftline.operators.alerts import AlertEngine, alerts_schema
from driftline.sinks.alertmanager import ActiveAlertsSink
from driftline.sinks.webhook import WebhookSink, verify
from driftline.testing.receiver import PostRecorder

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def row(minute: int, **stats: Any) -> dict[str, Any]:
    start = T0 + timedelta(minutes=minute)
    base = {"key": "source=a|model=m", "source": "a", "model": "m", "window_start": start, "window_end": start + timedelta(minutes=1), "model_calls": 100, "drift": []}
    base.update(stats)
    return base


@pytest.fixture()
def receiver() -> Iterator[PostRecorder]:
    with PostRecorder() as r:
        yield r


def alert_frames(cfg: MonitoringConfig, *rows: dict[str, Any]) -> list[pl.DataFrame]:
    eng = AlertEngine(cfg, FakeClock())
    return [rows_frame(eng.evaluate(r), alerts_schema(cfg)) for r in rows]


def gauge(rule: str, severity: str) -> float | None:
    return REGISTRY.get_sample_value("driftline_active_alerts", {"rule": rule, "severity": severity})


def test_webhook_json_is_signed_with_a_timestamp_retried_and_stable(receiver: PostRecorder) -> None:
    cfg = MonitoringConfig(alerts={"webhook_url": receiver.url + "/hook", "webhook_retries": 2})
    clock = FakeClock(T0 + timedelta(hours=1))
    sink = WebhookSink(cfg, secret=b"s3cret", clock=clock)
    fired, resolved = alert_frames(cfg, row(0, error_rate=0.5), row(1, error_rate=0.0))
    receiver.fail_next = 1  # one 503, then success after a quick retry
    part = sink.build_part("alerts_webhook_out", "alerts", None)
    part.write_batch([fired, resolved])
    receiver.wait(1)
    path, headers, body, _ = receiver.posts[0]
    ts = headers["X-Driftline-Timestamp"]
    sig = headers["X-Driftline-Signature"]
    now = clock.now().timestamp()
    assert ts == str(int(now))
    assert verify(body, b"s3cret", sig, ts, now=now)
    assert not verify(body, b"other", sig, ts, now=now)
    assert not verify(body + b" ", b"s3cret", sig, ts, now=now)  # body changed
    assert not verify(body, b"s3cret", sig, str(int(now) + 1), now=now)  # timestamp changed
    assert not verify(body, b"s3cret", sig, ts, now=now + 301)  # replayed after the 300 s tolerance
    payload = json.loads(body)
    assert path == "/hook"
    assert [p["labels"]["alertname"] for p in payload] == ["error_rate_high", "error_rate_high"]
    assert payload[0]["labels"]["severity"] == "critical" and payload[0]["labels"]["source"] == "a"
    assert "endsAt" not in payload[0] and payload[1]["endsAt"] == "2026-01-01T00:02:00Z"
    assert [p["annotations"]["alert_id"] for p in payload] == [r["alert_id"] for f in (fired, resolved) for r in f.iter_rows(named=True)]
    # the same alerts raised again (a replay after a crash) carry the same ids and delivery id
    again = alert_frames(cfg, row(0, error_rate=0.5), row(1, error_rate=0.0))
    part.write_batch(again)
    receiver.wait(2)
    assert json.loads(receiver.posts[1][2]) == payload
    assert receiver.posts[1][1]["X-Driftline-Delivery-Id"] == headers["X-Driftline-Delivery-Id"]
    assert part.snapshot().pending == []
    part.close()


def test_webhook_state_keeps_undelivered_transitions_across_a_restart(receiver: PostRecorder) -> None:
    cfg = MonitoringConfig(alerts={"webhook_url": receiver.url + "/hook", "webhook_retries": 0})
    (fired,) = alert_frames(cfg, row(0, error_rate=0.5))
    down = WebhookSink(MonitoringConfig(alerts={"webhook_url": "http://127.0.0.1:9/none", "webhook_retries": 0, "webhook_timeout_seconds": 0.5}), retry_seconds=60)
    part = down.build_part("alerts_webhook_out", "alerts", None)
    part.write_batch([fired])
    time.sleep(0.3)  # the one attempt fails (nothing listens on port 9)
    state = part.snapshot()
    part._loop.stop()  # a crash: no final round
    assert len(state.pending) == 1
    pending_id = state.pending[0]["alert_id"]
    resumed = WebhookSink(cfg).build_part("alerts_webhook_out", "alerts", state)
    receiver.wait(1)
    assert json.loads(receiver.posts[0][2])[0]["annotations"]["alert_id"] == pending_id
    assert "X-Driftline-Signature" not in receiver.posts[0][1]  # no secret configured: unsigned
    resumed.close()


def test_webhook_slack_format(receiver: PostRecorder) -> None:
    cfg = MonitoringConfig(alerts={"webhook_url": receiver.url + "/services/T000/B000/XXXX", "webhook_format": "slack"})
    fired, resolved = alert_frames(cfg, row(0, latency_p95_ms=2500.0), row(1, latency_p95_ms=100.0))
    part = WebhookSink(cfg, secret=b"k").build_part("alerts_webhook_out", "alerts", None)
    part.write_batch([fired])
    part.write_batch([resolved])
    part.close()  # delivers what is left
    texts = [line for _, _, b, _ in receiver.posts for line in json.loads(b)["text"].splitlines()]
    assert texts[0].startswith(":rotating_light: *WARNING* `latency_p95_high` firing for `source=a|model=m`: 2500 > 2000")
    assert texts[1].startswith(":white_check_mark: *RESOLVED* `latency_p95_high` resolved")
    assert len(texts) == 2


def test_webhook_url_at_alertmanager_is_refused_with_the_key() -> None:
    from driftline.config import ConfigError

    with pytest.raises(ConfigError, match=r"monitoring.alerts.webhook_url: .*points at Alertmanager.*alertmanager_urls"):
        load_config(None, env={}, overrides={"monitoring": {"alerts": {"webhook_url": "http://am:9093/api/v2/alerts"}}})


def am_posts(receiver: PostRecorder) -> list[list[dict[str, Any]]]:
    return [json.loads(b) for p, _, b, _ in receiver.posts if p == "/api/v2/alerts"]


def test_active_alerts_are_resent_while_active_and_resolved_with_ends_at(receiver: PostRecorder) -> None:
    cfg = load_config(
        None,
        env={"DRIFTLINE_ALERTMANAGER_AUTHORIZATION": "Bearer am-t0ken"},
        overrides={"monitoring": {"alerts": {"alertmanager_urls": [receiver.url], "resend_interval_seconds": 0.3}}},
    ).monitoring
    assert "am-t0ken" not in repr(cfg.alerts)  # secret-typed
    fired, resolved = alert_frames(cfg, row(0, latency_p95_ms=2500.0, error_rate=0.2), row(1, latency_p95_ms=100.0, error_rate=0.2))
    sink = ActiveAlertsSink(cfg)
    part = sink.build_part("alerts_active_out", "alerts", None)
    start = time.monotonic()
    part.write_batch([fired])
    assert gauge("latency_p95_high", "warning") == 1 and gauge("error_rate_high", "critical") == 1
    receiver.wait(4)  # posted at once, then re-sent every 0.3 s while active
    first = am_posts(receiver)
    assert all(sorted(a["labels"]["alertname"] for a in p) == ["error_rate_high", "latency_p95_high"] for p in first)
    assert all("endsAt" not in a for p in first for a in p)
    times = [t - start for _, _, _, t in receiver.posts[:4]]
    assert times[0] < 0.5 and all(0.2 < b - a < 1.0 for a, b in zip(times, times[1:])), times
    assert all(h["Authorization"] == "Bearer am-t0ken" for _, h, _, _ in receiver.posts)
    assert len({h["X-Driftline-Delivery-Id"] for _, h, _, _ in receiver.posts}) == 1  # same set, same id
    a = first[0][0]
    assert set(a["labels"]) == {"alertname", "rule", "severity", "pipeline", "source", "model"}
    assert a["startsAt"] == "2026-01-01T00:00:00Z"

    n = len(receiver.posts)
    part.write_batch([resolved])  # latency resolves, the error rate still fires
    receiver.wait(n + 3)
    assert gauge("latency_p95_high", "warning") == 0 and gauge("error_rate_high", "critical") == 1
    after = am_posts(receiver)[n:]
    ended = [x for x in after[0] if x["labels"]["alertname"] == "latency_p95_high"]
    assert ended and ended[0]["endsAt"] == "2026-01-01T00:02:00Z"
    assert all([x["labels"]["alertname"] for x in p] == ["error_rate_high"] for p in after[1:])  # resolved once, then only the active one
    state = part.snapshot()
    part.close()
    assert list(state.active) == ["error_rate_high|source=a|model=m"] and state.resolved == {}

    # a restart from the snapshot re-sends what is still active, without a new transition
    m = len(receiver.posts)
    resumed = ActiveAlertsSink(cfg).build_part("alerts_active_out", "alerts", state)
    receiver.wait(m + 1)
    assert [x["labels"]["alertname"] for x in am_posts(receiver)[m]] == ["error_rate_high"]
    resumed.close()


def test_active_alerts_without_alertmanager_only_count(receiver: PostRecorder) -> None:
    cfg = MonitoringConfig()
    (fired,) = alert_frames(cfg, row(0, budget_exhausted_calls=3))
    part = ActiveAlertsSink(cfg).build_part("alerts_active_out", "alerts", None)
    part.write_batch([fired])
    assert gauge("budget_exhausted", "critical") == 1
    part.close()
    assert receiver.posts == []

