"""The Prometheus page after 10,000 events from 1,000 distinct sources through both flows:
every metric has HELP text and a unit in its name, every label stays within its cap (an
overflow value past it), no id or PII reaches a label, the window gauges equal the
window rows, and the endpoint serves /healthz and /readyz on the address asked for."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from bytewax.testing import run_main
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftline import metrics
from driftline.config import load_config
from driftline.flows.enrich import EnrichIO, build_enrich_flow
from driftline.flows.monitor import MonitorIO, build_monitor_flow
from driftline.producer import SyntheticProducer, encode_json
from driftline.testing import InMemorySink, micro_batch_source, raw_batches

EVENTS = 10_000  # enrich flow: text events from SOURCES sources
SOURCES = 1_000
TELEMETRY = 2_000  # monitor flow: model calls from SOURCES services and 97 models
LIMIT = 40  # monitoring.metrics.label_value_limit in this test
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)

#: The unit (or the thing counted) a name must carry, before _total/_bucket/_sum/_count/_info.
UNITS = (
    "seconds", "bytes", "ratio", "usd", "tokens", "events", "calls", "rows", "files", "messages", "entities", "alerts",
    "retries", "fallbacks", "errors", "records", "refusals", "warnings", "breaches", "score", "state", "requests",
    "routes", "waits", "pauses", "lookups", "decisions", "findings", "fallthroughs", "transactions",
)  # fmt: skip
#: OpenTelemetry semantic-convention names keep their own spelling; their unit is in the HELP text.
OTEL_NAMES = {"gen_ai_client_token_usage": "{token}"}
#: Labels whose values come from data and are capped by monitoring.metrics (the overflow value past the cap).
CAPPED = {"source", "model", "reason", "error_class", "feature", "name", "gen_ai_request_model"}
BOUNDED = 64  # every other label takes values from a fixed or configured set
ID_OR_PII = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|@|\buser-\d+|\bsk-[A-Za-z0-9]{20,}")


def enrich_payloads() -> list[bytes]:
    gen = SyntheticProducer(11, pii_rate=0.3, invalid_rate=0.03, start_time=T0, spacing_seconds=0.05)
    out = []
    for i, ev in enumerate(gen.events(EVENTS)):
        if ev.defect is None:
            out.append(encode_json({**ev.record, "source": f"src-{i % SOURCES:04d}"}))
        else:
            out.append(ev.payload)
    return out


def telemetry_payloads() -> list[bytes]:
    out = []
    for i in range(TELEMETRY):
        obj = {
            "call_id": f"call-{i}",
            "event_time": int((T0 + timedelta(milliseconds=50 * i)).timestamp() * 1000),
            "service": f"src-{i % SOURCES:04d}",  # the enrich flow's sources: both flows share the process's caps here
            "model": f"model-{i % 97}",
            "input_tokens": 40 + i % 13,
            "output_tokens": 5 + i % 7,
            "latency_ms": 80.0 + (i % 50) * 10,
            "confidence": 0.9,
            "error_class": "timeout" if i % 50 == 0 else None,
            "label": "pos",
            "prompt": f"mail jane.doe{i}@example.com please",
            "completion": "ok",
        }
        out.append(json.dumps(obj).encode())
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, pl.DataFrame]]:
    root = tmp_path_factory.mktemp("out")
    over = {
        "sinks": {"root": str(root)},
        "monitoring": {"window_seconds": 300, "metrics": {"label_value_limit": LIMIT}, "drift": {"warmup_windows": 1}},
        "models": {"budgets": {"per_source_daily_usd": {"src-0001": 5.0}, "default_source_daily_usd": 5.0}, "pricing": {f"model-{m}": {"input_per_mtok": 1.0, "output_per_mtok": 2.0} for m in range(97)}},
    }
    cfg = load_config(None, env={}, overrides=over)
    metrics.WINDOWS.clear()
    rows: dict[str, pl.DataFrame] = {}
    io = EnrichIO(micro_batch_source(raw_batches(enrich_payloads(), batch_size=500)), InMemorySink(), None)
    run_main(build_enrich_flow(cfg, io=io))
    rows["enrich"] = pl.read_parquet(list((root / "metrics").rglob("*.parquet")))
    windows = InMemorySink()
    m_io = MonitorIO(micro_batch_source(raw_batches(telemetry_payloads(), topic="model-calls", batch_size=500)), InMemorySink(), frames={"metrics": windows})
    run_main(build_monitor_flow(cfg, io=m_io, parquet=False))
    rows["monitor"] = pl.concat(windows.items)
    return generate_latest(REGISTRY).decode(), rows


def test_every_metric_has_help_and_a_unit(page: tuple[str, dict[str, pl.DataFrame]]) -> None:
    text, _ = page
    families = list(text_string_to_metric_families(text))
    for fam in families:
        assert fam.documentation.strip(), f"{fam.name}: no HELP text"
    ours = [f for f in families if f.name.startswith(("driftline_", "gen_ai_"))]  # python_* and process_*: the client library's standard set
    assert len(ours) > 40
    for fam in ours:
        if all(x.name.endswith("_info") for x in fam.samples) and fam.samples:  # driftline_build_info: an info metric (value 1, labels)
            continue
        if fam.name in OTEL_NAMES:
            assert OTEL_NAMES[fam.name] in fam.documentation, f"{fam.name}: HELP must give the unit"
            continue
        base = re.sub(r"_(total|info)$", "", fam.name)
        words = base.split("_")
        assert any(u in words[-2:] for u in UNITS) or base.endswith("_timestamp_seconds"), f"{fam.name}: no unit in the name"


def test_label_values_stay_within_their_caps(page: tuple[str, dict[str, pl.DataFrame]]) -> None:
    text, _ = page
    values: dict[str, set[str]] = defaultdict(set)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            for k, v in s.labels.items():
                values[k].add(v)
                assert not ID_OR_PII.search(v), f"{fam.name}: label {k}={v!r} looks like an id or PII"
    for label in CAPPED & set(values):
        assert len(values[label]) <= LIMIT + 1, f"{label}: {len(values[label])} values (cap {LIMIT} + {metrics.OVERFLOW})"
    for label in set(values) - CAPPED - {"le"}:
        assert len(values[label]) <= BOUNDED, f"{label}: {len(values[label])} values"
    print(f"\n{EVENTS} events, {SOURCES} sources, cap {LIMIT}: distinct values " + ", ".join(f"{k}={len(values[k])}" for k in sorted(CAPPED & set(values))))
    # the caps were needed: 1,000 sources and 97 models folded past them
    assert metrics.OVERFLOW in values["source"] and len(values["source"]) == LIMIT + 1
    assert metrics.OVERFLOW in values["model"]
    assert {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_token_type", "gen_ai_request_model", "error_type"} <= set(values)


_PARSED: dict[str, list[tuple[str, dict[str, str], float]]] = {}


def sample(text: str, metric: str, **labels: str) -> float | None:
    """Sum of the samples named ``metric`` whose labels include ``labels`` (None: no such sample)."""
    if text not in _PARSED:
        _PARSED.clear()
        _PARSED[text] = [(s.name, s.labels, float(s.value)) for fam in text_string_to_metric_families(text) for s in fam.samples]
    found = [v for n, lbl, v in _PARSED[text] if n == metric and all(lbl.get(k) == x for k, x in labels.items())]
    return sum(found) if found else None


def test_window_gauges_equal_the_latest_window_rows(page: tuple[str, dict[str, pl.DataFrame]]) -> None:
    text, rows = page
    for flow, frame in rows.items():
        assert frame.height, flow
        latest = frame.sort("window_end").group_by("key").last()
        checked = 0
        for r in latest.iter_rows(named=True):
            labels = {"flow": flow, "source": r["source"], "model": r["model"]}
            got = sample(text, "driftline_window_events", **labels)
            if got is None:
                continue  # folded into the overflow value
            checked += 1
            assert got == r["events"]
            assert sample(text, "driftline_window_end_timestamp_seconds", **labels) == r["window_end"].timestamp()
            if r["latency_p95_ms"] is not None:
                assert sample(text, "driftline_window_latency_seconds", quantile="0.95", **labels) == pytest.approx(r["latency_p95_ms"] / 1000)
            if r["cost_usd"] is not None:
                assert sample(text, "driftline_window_cost_usd", **labels) == pytest.approx(r["cost_usd"])
        assert checked >= 10, (flow, checked)  # keys whose source and model were admitted under the caps
    # under the default chain [local, rules] every answer comes from the first tier: no fallback
    enrich = rows["enrich"]
    assert enrich["fallback_share"].drop_nulls().max() == 0.0
    assert sample(text, "driftline_window_fallback_ratio", flow="enrich") == 0.0


def test_flow_counters_and_lag_free_metrics(page: tuple[str, dict[str, pl.DataFrame]]) -> None:
    text, _ = page
    assert sample(text, "driftline_events_in_total", flow="enrich") == EVENTS
    assert sample(text, "driftline_events_in_total", flow="monitor") == TELEMETRY
    assert sum(v for v in [sample(text, "driftline_pii_entities_total", flow="enrich", type=t) for t in ("email", "phone", "person", "credit_card")] if v) > 0
    assert sample(text, "driftline_pii_entities_total", flow="monitor", type="email") == TELEMETRY
    assert sample(text, "driftline_model_calls_total", backend="telemetry", outcome="error") == TELEMETRY // 50
    assert sample(text, "gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="chat", error_type="timeout") == TELEMETRY // 50
    assert sample(text, "driftline_budget_remaining_usd", scope="source", name="src-0001") == 5.0
    assert sample(text, "driftline_build_info") == 1.0


def test_endpoint_binds_the_address_asked_for_and_serves_probes() -> None:
    from driftline.testing.prometheus import free_port

    port = free_port()
    server = metrics.serve_metrics(port, "127.0.0.1")
    health = metrics.HEALTH
    try:
        health.reset()

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        assert get("/readyz") == (503, "input not polled yet\n")
        assert get("/healthz")[0] == 200
        health.polled()
        assert get("/readyz") == (200, "ok\n")
        health.stall_seconds = 0.0
        code, why = get("/healthz")
        assert code == 503 and "not polled" in why
        health.stall_seconds = 300.0
        status, body = get("/metrics")
        assert status == 200 and "driftline_events_in_total" in body
        assert get("/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        health.reset()


def test_metrics_addr_option(tmp_path: Path) -> None:
    from driftline.cli import build_parser

    args = build_parser().parse_args(["run", "enrich", "--metrics-addr", "0.0.0.0:9108"])
    assert metrics.parse_addr(args.metrics_addr, args.metrics_port or None) == ("0.0.0.0", 9108)
    args = build_parser().parse_args(["run", "monitor", "--metrics-port", "9109"])
    assert metrics.parse_addr(args.metrics_addr, args.metrics_port) == ("127.0.0.1", 9109)
