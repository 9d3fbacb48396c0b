"""`docker compose up` brings up the whole stack: checked by reading docker-compose.yml
(there is no Docker engine here) against the files it provisions: services, ports and
bind addresses, the scrape targets Prometheus is given, the rule and dashboard folders,
Alertmanager for the flows' own alerts, and an image whose user owns the volume it writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from driftline.cli import build_parser
from driftline.metrics import parse_addr

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def mounts(service: str) -> dict[str, str]:
    """container path -> repository path (or volume name) of a service's volumes."""
    out = {}
    for v in SERVICES[service].get("volumes", []):
        src, dst = v.split(":")[:2]
        out[dst] = src
    return out


def published(service: str) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    out = []
    for p in SERVICES[service].get("ports", []):
        host, hport, cport = p.split(":") if p.count(":") == 2 else ("0.0.0.0", *p.split(":"))
        out.append((host, int(hport), int(cport)))
    return out


def test_the_stack_has_every_service() -> None:
    assert {"kafka", "enrich", "monitor", "prometheus", "alertmanager", "grafana"} <= set(SERVICES)
    assert "profiles" not in SERVICES["prometheus"] and "profiles" not in SERVICES["grafana"]  # up by default
    for name in ("prometheus", "alertmanager", "grafana"):
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", SERVICES[name]["image"]), f"{name}: pin an image version"


def test_flows_serve_metrics_on_every_interface_of_their_container_and_prometheus_scrapes_both() -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {j["job_name"]: t for j in prom["scrape_configs"] for sc in j["static_configs"] for t in sc["targets"]}
    for flow in ("enrich", "monitor"):
        cmd = SERVICES[flow]["command"]
        args = build_parser().parse_args(cmd[1:])  # the command line the container runs is valid
        host, port = parse_addr(args.metrics_addr, args.metrics_port or None)
        assert host == "0.0.0.0", f"{flow}: metrics bound to {host}: unreachable from the prometheus container"
        assert targets[f"driftline-{flow}"] == f"{flow}:{port}"
        assert ("127.0.0.1", port, port) in published(flow)  # on the host: loopback only
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_monitoring_ports_are_published_on_loopback_only() -> None:
    for service, port in (("prometheus", 9090), ("alertmanager", 9093), ("grafana", 3000)):
        assert published(service) == [("127.0.0.1", port, port)], service


def test_provisioning_paths_exist_and_match_the_configs() -> None:
    prom = mounts("prometheus")
    assert (ROOT / prom["/etc/prometheus/prometheus.yml"]).is_file()
    rules_dir = ROOT / prom["/etc/prometheus/rules"]
    assert (rules_dir / "driftline.yml").is_file()
    rule_glob = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["rule_files"]
    assert rule_glob == ["/etc/prometheus/rules/*.yml"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]

    am = mounts("alertmanager")
    assert (ROOT / am["/etc/alertmanager/alertmanager.yml"]).is_file()
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in SERVICES["alertmanager"]["command"]

    graf = mounts("grafana")
    prov = ROOT / graf["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((prov / "datasources/driftline.yml").read_text())["datasources"]
    assert {d["type"]: d["url"] for d in datasources} == {"prometheus": "http://prometheus:9090", "alertmanager": "http://alertmanager:9093"}
    provider = yaml.safe_load((prov / "dashboards/driftline.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dash_dir = ROOT / graf["/var/lib/grafana/dashboards"]
    dashboard = json.loads((dash_dir / "driftline.json").read_text())
    uid = next(d["uid"] for d in datasources if d["type"] == "prometheus")
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(t["datasource"]["uid"] == uid for p in panels for t in p["targets"])
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")
    secret_file = COMPOSE["secrets"]["grafana_admin_password"]["file"]
    assert (ROOT / re.sub(r"\$\{[A-Z_]+:-(.+)\}", r"\1", secret_file)).is_file()


def test_flows_push_their_alerts_to_the_alertmanager_service() -> None:
    env = COMPOSE["x-driftline-env"]
    assert json.loads(env["DRIFTLINE__MONITORING__ALERTS__ALERTMANAGER_URLS"]) == ["http://alertmanager:9093"]
    for flow in ("enrich", "monitor"):
        assert SERVICES[flow]["environment"]["DRIFTLINE__MONITORING__ALERTS__ALERTMANAGER_URLS"] == env["DRIFTLINE__MONITORING__ALERTS__ALERTMANAGER_URLS"]


def test_each_flow_writes_its_own_datasets() -> None:
    # both flows write metrics, metrics_late and alerts: one root each, or their writers collide
    roots = {SERVICES[flow]["environment"]["DRIFTLINE__SINKS__ROOT"] for flow in ("enrich", "monitor")}
    assert len(roots) == 2 and all(r.startswith("/data/output/") for r in roots)


def test_the_image_user_owns_the_volume_it_writes() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "nobody", "0")
    assert re.search(rf"chown -R {user[-1]}:{user[-1]} /data", dockerfile)
    assert "mkdir -p /data/output /data/recovery /data/logs /data/state" in dockerfile
    assert re.search(r"^ENV DRIFTLINE_HOME=/data/", dockerfile, re.M)  # local state too, not the read-only /app
    for flow in ("enrich", "monitor"):
        assert "driftline-data:/data" in SERVICES[flow]["volumes"]
        cmd = SERVICES[flow]["command"]
        written = [cmd[i + 1] for i, a in enumerate(cmd) if a in ("--recovery-dir", "--log-file")] + [SERVICES[flow]["environment"]["DRIFTLINE__SINKS__ROOT"]]
        assert all(p.startswith(("/data/output", "/data/recovery", "/data/logs")) for p in written), written
