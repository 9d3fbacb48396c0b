"""deploy/prometheus and deploy/alertmanager with the real tools: `promtool check rules`,
`promtool test rules` covering every alerting rule firing and not firing, `promtool check
config`, `amtool check-config`; every alert has a severity, the driftline rule it mirrors
(where one exists) and a runbook that docs/operations.md has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from driftline.config.monitoring import MonitoringConfig
from driftline.testing import prometheus as prom

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/driftline.yml"
RULE_TESTS = ROOT / "deploy/prometheus/tests/driftline_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    try:
        return prom.require("promtool")
    except prom.Unavailable as exc:
        pytest.skip(str(exc))


def alerting_rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules_and_the_config(promtool: str) -> None:
    done = prom.promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout)
    done = prom.promtool("check", "config", "--syntax-only", str(ROOT / "deploy/prometheus/prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    done = prom.promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alerting_rule_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in tests:
        for t in case.get("alert_rule_test", []):
            if t["exp_alerts"]:
                fired |= {(t["alertname"], a["exp_labels"]["severity"]) for a in t["exp_alerts"]}
            else:
                quiet.add(t["alertname"])
    rules = {(r["alert"], r["labels"]["severity"]) for r in alerting_rules()}
    assert rules - fired == set(), "rules never tested firing"
    assert {a for a, _ in rules} - quiet == set(), "rules never tested not firing"


def test_alerts_carry_severity_runbook_and_the_mirrored_driftline_rule() -> None:
    docs = (ROOT / "docs/operations.md").read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', docs)) | {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", docs, re.M)}
    driftline_rules = {r.name: r for r in MonitoringConfig().alerts.rules}
    for r in alerting_rules():
        assert r["labels"]["severity"] in ("info", "warning", "critical"), r["alert"]
        url = r["annotations"]["runbook_url"]
        assert url.startswith("docs/operations.md#") and url.split("#", 1)[1] in anchors, (r["alert"], url)
        if r["alert"].startswith("AI"):
            assert r["labels"]["rule"] in driftline_rules, r["alert"]
    # the seed's thresholds, as the flows' own default rules have them
    thresholds = {r["labels"].get("rule"): r["expr"] for r in alerting_rules()}
    assert thresholds["latency_p95_high"].endswith("> 2") and driftline_rules["latency_p95_high"].threshold == 2000
    assert thresholds["latency_p99_high"].endswith("> 5") and driftline_rules["latency_p99_high"].threshold == 5000
    assert thresholds["error_rate_high"].endswith("> 0.05") and driftline_rules["error_rate_high"].threshold == 0.05
    assert thresholds["cost_per_request_high"].endswith("> 0.015") and driftline_rules["cost_per_request_high"].threshold == 0.015


def test_alertmanager_config_is_valid(promtool: str) -> None:
    try:
        amtool = prom.require("amtool")
    except prom.Unavailable as exc:
        pytest.skip(str(exc))
    import subprocess

    done = subprocess.run([amtool, "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 inhibit rules" in done.stdout
