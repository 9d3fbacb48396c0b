"""Operations end to end: both flows on the real broker, the real Prometheus and
Alertmanager binaries on loopback (free ports, configuration generated from deploy/ with
seconds-level intervals), a latency incident injected through the loopback model server.

Checked:

- Prometheus scrapes enrich and monitor (``up`` 1 for both jobs);
- every PromQL expression of the Grafana dashboard returns data;
- the incident (the model server answers after 2.6 s) makes Prometheus's
  ``AILatencyP95High`` active in Alertmanager within two evaluation intervals of the slow
  window's sample reaching Prometheus, and the flow's own ``latency_p95_high`` (pushed,
  re-sent every second) active too; both stay active for the incident's whole length,
  four times Alertmanager's ``resolve_timeout`` (3 s here), and are resolved after it; the
  route delivers the firing and the resolved notification to the receiver;
- once the producers stop and the topics are drained, the consumer-lag and commit-lag
  gauges are 0, and the flows' consumer groups hold the end offsets (what lag tools read).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.kafka_io import ensure_topics
from driftline.producer import SyntheticProducer, encode_json
from driftline.testing import prometheus as prom
from driftline.testing.openai_server import Behaviour, OpenAITestServer
from driftline.testing.receiver import PostRecorder

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_S = 1
EVAL_S = 2
RESOLVE_TIMEOUT_S = 3
INCIDENT_S = 4 * RESOLVE_TIMEOUT_S
SLOW_S = 2.6  # above the p95 threshold (2 s), below p99's (5 s)
MODEL = "gpt-ops"


def statuses(receiver: PostRecorder, alertname: str) -> list[tuple[str, str]]:
    """(receiver path, status) of every notification Alertmanager sent about ``alertname``."""
    return [(p.path, a["status"]) for p in receiver.posts for a in p.json()["alerts"] if a["labels"].get("alertname") == alertname]


def alertmanager_config(receiver: str) -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml with test timings and the receivers pointed at ``receiver``."""
    cfg = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    cfg["global"]["resolve_timeout"] = f"{RESOLVE_TIMEOUT_S}s"
    cfg["route"].update(group_wait="1s", group_interval="1s")
    cfg["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": f"{receiver}/{r['name']}", "send_resolved": True}]} for r in cfg["receivers"]]
    return cfg


def prometheus_config(targets: dict[str, str], alertmanager: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with seconds-level intervals and loopback targets."""
    cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{EVAL_S}s"}
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager.removeprefix("http://")]
    cfg["scrape_configs"] = [{"job_name": job, "static_configs": [{"targets": [addr]}]} for job, addr in targets.items()]
    return cfg


def flow_config(tmp: Path, bootstrap: str, topics: dict[str, str], base_url: str, alertmanager: str) -> Path:
    doc = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "input_topic": topics["input"],
            "telemetry_topic": topics["telemetry"],
            "dead_letter_topic": topics["input"] + ".dlq",
            "output_topic": topics["input"] + ".out",
            "metrics_topic": topics["input"] + ".metrics",
            "alerts_topic": topics["input"] + ".alerts",
            "idle_tick_ms": 200,
        },
        "sinks": {"flush_seconds": 1.0},
        "models": {
            "chain": ["primary", "local", "rules"],
            "backends": {
                "primary": {"kind": "openai", "model": MODEL, "base_url": base_url, "timeout_s": 15.0, "max_in_flight": 64, "retry": {"max_attempts": 1}},
                "local": {"kind": "local"},
                "rules": {"kind": "rules"},
            },
            "pricing": {MODEL: {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, "gpt-telemetry": {"input_per_mtok": 5.0, "output_per_mtok": 15.0}},
            "budgets": {"per_source_daily_usd": {"reviews": 100.0, "support-desk": 100.0, "chat": 100.0}},
            "batching": {"max_rows": 64, "max_wait_ms": 100},
        },
        "monitoring": {
            "window_seconds": 2,
            "allowed_lateness_seconds": 0,
            # above the incident's model latency: while calls take SLOW_S, only idle ticks pass the
            # model stage; a shorter timeout would close windows before their slow rows arrive (late)
            "idle_partition_timeout_seconds": 2 * SLOW_S,
            "drift": {"warmup_windows": 2, "min_window_values": 3},
            "alerts": {"cooldown_seconds": 0, "alertmanager_urls": [alertmanager], "resend_interval_seconds": 1},
        },
    }
    path = tmp / "driftline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Flow:
    """``driftline run <flow>`` as a subprocess with its metrics endpoint on a free loopback port."""

    def __init__(self, name: str, config: Path, tmp: Path) -> None:
        self.name = name
        self.port = prom.free_port()
        self.log = tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "driftline.cli", "run", name, "--config", str(config), "--metrics-addr", f"127.0.0.1:{self.port}", "--recovery-dir", str(tmp / f"rec-{name}"), "--epoch-interval", "1"]
        env = {**os.environ, "DRIFTLINE_HOME": str(tmp / "home"), "DRIFTLINE__SINKS__ROOT": str(tmp / "out" / name)}  # one dataset root per flow
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except OSError:  # not listening yet, or 503 (input not polled yet)
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Producers:
    """Text events (12/s, some with PII, some invalid) and model-call telemetry (5/s), stamped now."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topics = topics
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        texts = SyntheticProducer(3, pii_rate=0.3, invalid_rate=0.05).events(100_000)
        rng = random.Random(4)
        i = 0
        next_at = time.monotonic()
        while not self.stop_flag.is_set():
            now = datetime.now(timezone.utc)
            ev = next(texts)
            payload = encode_json({**ev.record, "event_time": now}) if ev.defect is None else ev.payload
            self.producer.produce(self.topics["input"], payload)
            if i % 12 in (0, 3, 6, 9, 11):  # 5 of every 12
                call = {
                    "call_id": f"c{i}",
                    "event_time": int(now.timestamp() * 1000),
                    "service": "checkout",
                    "model": "gpt-telemetry",
                    "input_tokens": 200,
                    "output_tokens": 40,
                    "latency_ms": rng.uniform(80, 400),
                    "confidence": rng.uniform(0.8, 0.95),
                    "error_class": "timeout" if i % 60 == 0 else None,
                    "prompt": f"write to jane{i}@example.com",
                    "completion": "done",
                }
                self.producer.produce(self.topics["telemetry"], json.dumps(call).encode())
            self.producer.poll(0)
            i += 1
            next_at += 1 / 12
            time.sleep(max(next_at - time.monotonic(), 0))
        self.producer.flush(30)

    def stop(self) -> None:
        if not self.stop_flag.is_set():
            self.stop_flag.set()
            self.thread.join(60)
            del self.producer  # flushed by the thread; the client goes before the broker does


def wait_until(what: str, cond: Callable[[], Any], timeout: float, every: float = 0.2, context: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{context()}" if context else ""))
        time.sleep(every)


def state(p: prom.Prometheus, am: prom.Alertmanager) -> str:
    """What Prometheus and Alertmanager hold, for a failure message."""
    p95 = p.query('driftline_window_latency_seconds{quantile="0.95"}')
    return (
        f"prometheus alerts: {json.dumps(p.alerts())[:3000]}\n"
        f"window p95: {json.dumps(p95)[:2000]}\n"
        f"alertmanager alerts: {json.dumps(am.alerts())[:3000]}\n"
        f"prometheus log: {p.log_tail(1500)}\nalertmanager log: {am.log_tail(1500)}"
    )


@pytest.fixture()
def stack(kafka_bootstrap: str, unique_topic: Callable[[str], str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    try:
        for binary in ("prometheus", "prometheus-alertmanager"):
            prom.require(binary)
    except prom.Unavailable as exc:
        pytest.skip(str(exc))
    topics = {"input": unique_topic("ops-events"), "telemetry": unique_topic("ops-calls")}
    ensure_topics(kafka_bootstrap, topics.values(), partitions=1)
    receiver = PostRecorder()
    server = OpenAITestServer(Behaviour(latency_s=0.02, usage={"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132})).start()
    started: list[Any] = []
    try:
        am = prom.Alertmanager(tmp_path, alertmanager_config(receiver.url)).start()
        started.append(am)
        config = flow_config(tmp_path, kafka_bootstrap, topics, server.base_url, am.url)
        flows = {name: Flow(name, config, tmp_path) for name in ("enrich", "monitor")}
        started.extend(flows.values())
        targets = {f"driftline-{n}": f"127.0.0.1:{f.port}" for n, f in flows.items()}
        p = prom.Prometheus(tmp_path, prometheus_config(targets, am.url), rule_files=[ROOT / "deploy/prometheus/rules/driftline.yml"]).start()
        started.append(p)
        wait_until("both flows ready", lambda: all(f.ready() for f in flows.values()), timeout=180, every=0.5)
        producers = Producers(kafka_bootstrap, topics)
        started.append(producers)
        yield {"am": am, "prom": p, "flows": flows, "server": server, "receiver": receiver, "producers": producers, "topics": topics, "bootstrap": kafka_bootstrap}
    finally:
        for s in reversed(started):
            s.stop()
        server.stop()
        receiver.close()


def am_alert(am: prom.Alertmanager, **labels: str) -> dict[str, Any] | None:
    for a in am.alerts():
        if all(a["labels"].get(k) == v for k, v in labels.items()):
            return a
    return None


def test_operations_stack_end_to_end(stack: dict[str, Any]) -> None:
    am, p, server, receiver = stack["am"], stack["prom"], stack["server"], stack["receiver"]
    slow_p95 = 'driftline_window_latency_seconds{flow="enrich",quantile="0.95"} > 2'

    # -- healthy: both flows scraped, windows closing, drift references built ---------------
    wait_until("both flows scraped", lambda: len(p.query('up{job=~"driftline-.*"} == 1')) == 2, timeout=60)
    wait_until("feature drift after the warm-up", lambda: p.query('driftline_window_feature_drift_score{flow="enrich",statistic="psi"}'), timeout=120)
    wait_until("monitor windows", lambda: p.query('driftline_window_events{flow="monitor"}'), timeout=60)
    # a healthy baseline before the incident: no slow window, no latency alert (the first
    # windows of a loaded machine may be slow while the flows warm up: wait them out)
    wait_until(
        "a healthy baseline (no slow window, no latency alert)",
        lambda: not p.query(slow_p95) and am_alert(am, alertname="AILatencyP95High") is None and am_alert(am, alertname="latency_p95_high") is None,
        timeout=120,
        every=0.5,
        context=lambda: state(p, am),
    )

    # -- the incident -----------------------------------------------------------------------
    server.update(latency_s=SLOW_S)
    injected = time.monotonic()
    wait_until("a slow window in Prometheus", lambda: p.query(slow_p95), timeout=90, every=0.1)
    scraped = time.monotonic()
    fired = wait_until(
        "AILatencyP95High in Alertmanager", lambda: am_alert(am, alertname="AILatencyP95High", flow="enrich"), timeout=30, every=0.1, context=lambda: state(p, am)
    )
    active_at = time.monotonic()
    assert active_at - scraped <= 2 * EVAL_S, f"active {active_at - scraped:.1f} s after the sample reached Prometheus"
    assert fired["labels"]["rule"] == "latency_p95_high" and fired["labels"]["severity"] == "warning"
    pushed = wait_until("the flow's own alert", lambda: am_alert(am, alertname="latency_p95_high", pipeline="driftline"), timeout=30, every=0.1)
    # the flow's alert is inhibited while Prometheus reports the same rule and key: one page
    assert pushed["status"]["state"] == "suppressed" and pushed["status"]["inhibitedBy"]
    print(f"\nincident: slow window in Prometheus {scraped - injected:.1f} s after the injection, alert active {active_at - scraped:.1f} s later "
          f"(evaluation interval {EVAL_S} s); flow's alert pushed {time.monotonic() - injected:.1f} s after the injection")

    # every dashboard expression returns data (mid-incident, so ALERTS has a firing alert)
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/driftline.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    empty = [e for e in exprs if not p.query(e.replace("$__rate_interval", "30s"))]
    assert not empty, f"dashboard expressions without data: {empty}"

    # both alerts stay active for the whole incident, longer than resolve_timeout
    gaps = []
    while time.monotonic() - active_at < INCIDENT_S:
        if am_alert(am, alertname="AILatencyP95High", flow="enrich") is None:
            gaps.append(("prometheus", round(time.monotonic() - active_at, 1)))
        if am_alert(am, alertname="latency_p95_high", pipeline="driftline") is None:
            gaps.append(("pushed", round(time.monotonic() - active_at, 1)))
        time.sleep(0.5)
    assert not gaps, f"alerts missing from Alertmanager during the incident: {gaps}"
    print(f"both alerts active for the whole incident, {INCIDENT_S} s = {INCIDENT_S // RESOLVE_TIMEOUT_S} x resolve_timeout, no gap (checked every 0.5 s)")
    assert p.query('driftline_active_alerts{rule="latency_p95_high"} >= 1')  # keys (source, model) firing the rule

    # -- recovery -----------------------------------------------------------------------------
    server.update(latency_s=0.02)
    recovered = time.monotonic()
    wait_until("AILatencyP95High resolved", lambda: am_alert(am, alertname="AILatencyP95High", flow="enrich") is None, timeout=60, every=0.2)
    wait_until("the flow's alert resolved", lambda: am_alert(am, alertname="latency_p95_high", pipeline="driftline") is None, timeout=60, every=0.2)
    print(f"resolved {time.monotonic() - recovered:.1f} s after the server recovered")
    wait_until("firing and resolved notifications routed to ops-webhook", lambda: {("/ops-webhook", "firing"), ("/ops-webhook", "resolved")} <= set(statuses(receiver, "AILatencyP95High")), timeout=30)
    assert p.query('driftline_active_alerts{rule="latency_p95_high"} == 0')

    # -- drained: the lag gauges go to 0 ----------------------------------------------------------
    stack["producers"].stop()
    wait_until(
        "consumer lag 0 in both flows",
        lambda: len(p.query("sum by (job) (driftline_kafka_consumer_lag_messages) == 0")) == 2,
        timeout=60,
        context=lambda: json.dumps(p.query("driftline_kafka_consumer_lag_messages")),
    )
    wait_until(
        "commit lag 0 in every dataset",
        lambda: p.query("max(driftline_sink_oldest_uncommitted_age_seconds) == 0"),
        timeout=60,
        context=lambda: json.dumps(p.query("driftline_sink_oldest_uncommitted_age_seconds > 0")),
    )
    print("drained: consumer lag 0 in both flows, commit lag 0 in every dataset")
    # the flows' positions are committed to their consumer groups too: lag tools see them
    admin = AdminClient({"bootstrap.servers": stack["bootstrap"]})
    probe = Consumer({"bootstrap.servers": stack["bootstrap"], "group.id": "ops-e2e-probe"})
    try:
        for flow, topic in (("enrich", stack["topics"]["input"]), ("monitor", stack["topics"]["telemetry"])):
            tp = TopicPartition(topic, 0)
            _, high = probe.get_watermark_offsets(tp, timeout=10)

            def committed(group: str = f"driftline-{flow}", tp: TopicPartition = tp) -> int:
                res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [tp])])
                return int(next(iter(res.values())).result().topic_partitions[0].offset)

            wait_until(f"driftline-{flow} group at the end offset {high}", lambda committed=committed, high=high: committed() == high, timeout=30)
            print(f"drained: driftline-{flow} group committed at the end offset {high}")
    finally:
        probe.close()
