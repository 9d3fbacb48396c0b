"""The enrich flow with ``sinks.root`` on a real S3-compatible endpoint (moto's standalone
server on loopback, spoken to over HTTP by s3fs), then ``verify``, ``query`` and ``compact``
against it: the commit protocol on a store without rename or link."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from driftline.cli import main
from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.producer import produce
from driftline.runner import run_flow
from driftline.sinks.parquet import open_store
from driftline.sinks.parquet.manifest import live_files
from driftline.testing.s3 import LocalS3

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with LocalS3(log_file=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def test_enrich_flow_on_s3_then_verify_query_compact(kafka_bootstrap: str, unique_topic, s3: LocalS3, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = f"driftline-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket)
    root = f"s3://{bucket}/datasets"
    topic = unique_topic("s3")
    settings = {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
        "sinks": {"root": root, "storage_options": s3.storage_options, "flush_seconds": 0.3, "flush_rows": 150},
    }
    config_file = tmp_path / "driftline.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    for name, value in s3.secrets_env.items():  # credentials are secrets: environment, never the YAML file
        monkeypatch.setenv(name, value)
    cfg = load_config(str(config_file), env=s3.secrets_env)
    sent = produce(kafka_bootstrap, topic, 1200, seed=5, invalid_rate=0.05, pii_rate=0.2, progress=False)
    valid = sum(1 for e in sent if not e.defect)
    run_flow(build_enrich_flow(cfg, drain=True, state_dir=tmp_path / "recovery"), recovery_dir=tmp_path / "recovery", epoch_interval=1.0)

    store = open_store(root, s3.fsspec_options)
    assert not [p for p in store.list_files("enriched/_staging")], "staged objects left behind"
    files_before = len(live_files(store, "enriched"))
    assert files_before >= 8  # flush_rows 150 over 3 partitions

    def cli(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--config", str(config_file), *argv])
        return code, capsys.readouterr().out

    code, out = cli("verify", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"], report
    by_name = {d["name"]: d for d in report["datasets"]}
    assert by_name["enriched"]["rows"] == valid
    assert by_name["rejected"]["rows"] == len(sent) - valid

    sql = "SELECT src_partition, count(*) AS n, sum(src_offset) AS s, min(event_id) AS lo, max(event_id) AS hi FROM enriched GROUP BY ALL ORDER BY ALL"
    code, before = cli("query", "--format", "csv", sql)
    assert code == 0 and sum(int(line.split(",")[1]) for line in before.strip().splitlines()[1:]) == valid

    code, out = cli("compact", "--dataset", "enriched", "--older-than", "0", "--retention", "0", "--json")
    assert code == 0, out
    (res,) = json.loads(out)["datasets"]
    assert res["files_after"] < files_before and res["vacuumed"] == res["retired"] > 0
    assert len(live_files(store, "enriched")) == res["files_after"]
    assert len([p for p in store.list_files("enriched") if p.endswith(".parquet")]) == res["files_after"]  # retired objects are gone

    code, after = cli("query", "--format", "csv", sql)
    assert code == 0 and after == before
    code, out = cli("verify", "--json", "--dataset", "enriched")
    assert code == 0 and json.loads(out)["datasets"][0]["rows"] == valid
    code, _out = cli("report", "-o", str(tmp_path / "report.html"))
    assert code == 0 and f"<td>accepted (enriched)</td><td>{valid:,}</td>" in (tmp_path / "report.html").read_text()
