"""deploy/kubernetes/ holds together (issue 13): parsed from the YAML, every StatefulSet
is a Bytewax cluster whose pod ordinal is the process id and whose addresses name each
of its replicas through its headless Service; the recovery folder is a per-pod volume,
the datasets root and the model-call ledger live on the one volume every pod shares.
No cluster is needed: the same resolver ``driftline run`` uses reads each pod's
environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.config import load_config
from driftline.runner import Cluster

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def documents() -> list[dict[str, Any]]:
    return [d for p in sorted(ROOT.glob("*.yaml")) if p.name != "kustomization.yaml" for d in yaml.safe_load_all(p.read_text()) if d]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


STATEFULSETS = of_kind("StatefulSet")


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((ROOT / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in ROOT.glob("*.yaml") if p.name != "kustomization.yaml")


def test_both_flows_are_deployed() -> None:
    assert set(STATEFULSETS) == {"driftline-enrich", "driftline-monitor"}


@pytest.mark.parametrize("name", sorted(STATEFULSETS))
def test_statefulset_is_a_bytewax_cluster(name: str) -> None:
    sts = STATEFULSETS[name]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    replicas = spec["replicas"]
    assert spec["podManagementPolicy"] == "Parallel"  # the processes wait for each other: none may wait for another to be ready
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["BYTEWAX_STATEFULSET_NAME"]["value"] == name

    # the headless Service selects these pods and carries the Bytewax port
    service = of_kind("Service")[spec["serviceName"]]
    assert service["spec"]["clusterIP"] == "None" and service["spec"].get("publishNotReadyAddresses") is True
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items() and service["spec"]["selector"].items() <= labels.items()
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "bytewax")
    assert {"name": "bytewax", "containerPort": port} in container["ports"]

    # each pod resolves to its own process id and to one address per replica, in ordinal order
    static = {k: e["value"] for k, e in env.items() if "value" in e}
    for ordinal in range(replicas):
        cluster = Cluster.resolve(env={**static, "BYTEWAX_POD_NAME": f"{name}-{ordinal}"})
        assert cluster.process_id == ordinal
        assert cluster.addresses == tuple(f"{name}-{i}.{spec['serviceName']}:{port}" for i in range(replicas))

    # the command runs this flow with its recovery folder on the per-pod volume
    argv = container["command"]
    assert argv[:3] == ["driftline", "run", name.removeprefix("driftline-")]
    recovery_dir = argv[argv.index("--recovery-dir") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    templates = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
    assert mounts["recovery"] == recovery_dir and templates["recovery"]["spec"]["accessModes"] == ["ReadWriteOnce"]

    # the datasets root and the ledger are on the volume every pod of every flow shares
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = of_kind("PersistentVolumeClaim")[volumes["shared"]["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    config_map = of_kind("ConfigMap")[volumes["config"]["configMap"]["name"]]
    config_path = Path(env["DRIFTLINE_CONFIG"]["value"])
    assert mounts["config"] == str(config_path.parent)
    cfg = load_config(None, env={"DRIFTLINE_PII_KEY": "0" * 64}, overrides=yaml.safe_load(config_map["data"][config_path.name]))
    shared = mounts["shared"]
    assert cfg.sinks.root.startswith(f"{shared}/") and cfg.models.ledger.path.startswith(f"{shared}/")
    assert cfg.models.ledger.journal_mode == "delete"  # hosts share the ledger over a network file system
    assert cfg.recovery.partitions >= replicas * int(static["BYTEWAX_WORKERS_PER_PROCESS"]), "recovery.partitions: the most workers you will ever run"
    assert env["DRIFTLINE__PRIVACY__KEY_FILE"]["value"].startswith(mounts["pii-key"] + "/")


def test_compose_two_process_example_is_one_cluster() -> None:
    compose = yaml.safe_load((ROOT.parents[1] / "docker-compose.yml").read_text())["services"]
    members = {name: s for name, s in compose.items() if "BYTEWAX_PROCESS_ID" in (s.get("environment") or {})}
    assert len(members) == 2
    for name, s in members.items():
        cluster = Cluster.resolve(env={k: str(v) for k, v in s["environment"].items()})
        assert cluster.addresses[cluster.process_id].split(":")[0] == name  # its own address is its service name
        assert s["profiles"] == ["scale"]  # never started beside the single-process enrich service by default
    assert len({tuple(s["command"]) for s in members.values()}) == 1  # one flow, one recovery folder
