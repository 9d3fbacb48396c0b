"""produce -> enrich -> Parquet through a SASL_SSL broker (SCRAM-SHA-512 over TLS), run as
a user would: the ``driftline`` command in subprocesses, with every secret set.

Checks: the rows land; ``config show``, the run's logs and every command's output hold
none of the secrets; the manifests' config hash is the same before and after rotating
every secret (the broker password too, through the admin API); the old password then
fails within seconds with a message naming what to check, instead of retrying forever.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from driftline.broker import LocalKafka
from driftline.config.kafka import KafkaConfig
from driftline.testing.kafka import consume_all

pytestmark = pytest.mark.kafka

USER = "driftline-etl"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    port, controller = _free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller, state_dir=tmp_path_factory.mktemp("sasl-kafka"), security="SASL_SSL")
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop()


def _secrets(generation: int, tmp: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, {name: secret}) with every secret set, from every kind of source:
    plain variables, a *_FILE variable, the secrets directory and a conventional variable."""
    values = {
        "kafka password": f"kafka-pw-{generation}-Zq81xv",
        "pii key": f"pii-key-{generation}-0123456789abcdef",
        "api key": f"sk-api-{generation}-Hd83mw01",
        "webhook secret": f"whsec-{generation}-Pl2k9",
        "storage secret": f"s3-secret-{generation}-Yt6",
        "storage token": f"s3-token-{generation}-Qa1",
    }
    secrets_dir = tmp / f"secrets-{generation}"
    secrets_dir.mkdir()
    (secrets_dir / "kafka__security__password").write_text(values["kafka password"] + "\n")
    (secrets_dir / "sinks__storage_secrets__secret").write_text(values["storage secret"])
    token_file = tmp / f"token-{generation}"
    token_file.write_text(values["storage token"])
    env = {
        "DRIFTLINE_SECRETS_DIR": str(secrets_dir),
        "DRIFTLINE_PII_KEY": values["pii key"],
        "DRIFTLINE_TEST_API_KEY": values["api key"],
        "DRIFTLINE__MONITORING__ALERTS__WEBHOOK_SECRET": values["webhook secret"],
        "DRIFTLINE__SINKS__STORAGE_SECRETS__TOKEN_FILE": str(token_file),
    }
    return env, values


def _cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run([sys.executable, "-m", "driftline.cli", *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout)


def _manifest_hashes(root: Path) -> set[str]:
    return {json.loads(p.read_text())["config_hash"] for p in root.glob("*/_manifest/*.json")}


def test_sasl_ssl_end_to_end_with_rotated_secrets(secured_kafka: LocalKafka, unique_topic, tmp_path: Path) -> None:
    broker = secured_kafka
    topic = unique_topic("secured")
    out = tmp_path / "out"
    config = tmp_path / "driftline.yaml"
    config.write_text(
        f"""
mode: production
kafka:
  bootstrap_servers: {broker.bootstrap}
  input_topic: {topic}
  dead_letter_topic: {topic}.dlq
  output_topic: {topic}.out
  security:
    protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512
    username: {USER}
    ca_file: {broker.ca_file}
models:
  backends:
    local: {{kind: local}}
    rules: {{kind: rules}}
    remote: {{kind: openai, model: gpt-test, base_url: "http://127.0.0.1:9/v1", api_key_env: DRIFTLINE_TEST_API_KEY}}
monitoring:
  alerts: {{webhook_url: "http://127.0.0.1:9/hook"}}
sinks:
  root: {out}
  flush_seconds: 1
"""
    )
    env1, secrets1 = _secrets(1, tmp_path)
    broker.add_user(USER, secrets1["kafka password"])
    outputs: list[str] = []

    def cli(*args: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = _cli(*args, env=env)
        outputs.extend([proc.stdout, proc.stderr])
        if ok:
            assert proc.returncode == 0, f"driftline {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
        return proc

    shown = cli("config", "show", "--config", str(config), env=env1).stdout
    assert f"username: {USER}" in shown and "password: '**********'" in shown and "api_key: '**********'" in shown

    cli("produce", "--events", "400", "--invalid-rate", "0.05", "--seed", "3", "--config", str(config), env=env1)
    log1 = tmp_path / "run1.log"
    cli("run", "enrich", "--drain", "--recovery-dir", str(tmp_path / "rec"), "--config", str(config), "--log-level", "DEBUG", "--log-file", str(log1), env=env1)
    first = pl.read_parquet(str(out / "enriched" / "**" / "*.parquet"))
    rejected = pl.read_parquet(str(out / "rejected" / "**" / "*.parquet"))
    assert first.height + rejected.height == 400 and first.height >= 340
    assert first["event_id"].n_unique() == first.height
    hashes1 = _manifest_hashes(out)
    assert len(hashes1) == 1

    # Rotate every secret: the broker learns the new password through the admin API.
    env2, secrets2 = _secrets(2, tmp_path)
    broker.add_user(USER, secrets2["kafka password"])
    started = time.monotonic()
    stale = cli("produce", "--events", "10", "--config", str(config), env=env1, ok=False)
    assert stale.returncode == 1 and time.monotonic() - started < 60
    assert "refused the connection" in stale.stderr and "SASL authentication" in stale.stderr and "DRIFTLINE__KAFKA__SECURITY__PASSWORD" in stale.stderr

    cli("produce", "--events", "200", "--seed", "4", "--config", str(config), env=env2)
    log2 = tmp_path / "run2.log"
    cli("run", "enrich", "--drain", "--recovery-dir", str(tmp_path / "rec"), "--config", str(config), "--log-file", str(log2), env=env2)
    both = pl.read_parquet(str(out / "enriched" / "**" / "*.parquet"))
    assert both.height > first.height and both["event_id"].n_unique() == both.height
    assert _manifest_hashes(out) == hashes1, "rotating secrets changed the configuration hash"

    client = KafkaConfig(bootstrap_servers=broker.bootstrap, security=broker.client_security(USER, secrets2["kafka password"])).client_config()
    assert len(consume_all(broker.bootstrap, topic, client_config=client)) == 600

    texts = {"output": "\n".join(outputs), "run 1 log": log1.read_text(), "run 2 log": log2.read_text()}
    assert texts["run 1 log"].strip(), "the run wrote no log lines"
    for name, secret in [*secrets1.items(), *secrets2.items()]:
        for where, text in texts.items():
            assert secret not in text, f"the {name} appears in the {where}"


def test_wrong_password_fails_fast(secured_kafka: LocalKafka, tmp_path: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": secured_kafka.bootstrap,
        "DRIFTLINE__KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
        "DRIFTLINE__KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-256",
        "DRIFTLINE__KAFKA__SECURITY__USERNAME": "nobody",
        "DRIFTLINE__KAFKA__SECURITY__PASSWORD": "not-the-password",
        "DRIFTLINE__KAFKA__SECURITY__CA_FILE": str(secured_kafka.ca_file),
        "DRIFTLINE__SINKS__ROOT": str(tmp_path / "out"),
    }
    started = time.monotonic()
    proc = _cli("run", "enrich", "--drain", env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "SASL authentication" in proc.stderr and "kafka.security.username (nobody)" in proc.stderr
    assert "not-the-password" not in proc.stderr + proc.stdout
    assert elapsed < 60, f"took {elapsed:.0f} s"  # one auth round trip plus interpreter start-up; a hang would be minutes

    untrusted = _cli("run", "enrich", "--drain", env={**env, "DRIFTLINE__KAFKA__SECURITY__CA_FILE": "null"})  # the system trust store
    assert untrusted.returncode == 1 and "certificate verify failed" in untrusted.stderr and "kafka.security.ca_file" in untrusted.stderr
