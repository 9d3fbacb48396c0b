"""Secrets: where they are read from, that they never print, and that they stay out of
the configuration hash; plus the typed Kafka security settings and the CLI's options."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline import __version__
from driftline.cli import main
from driftline.config import ConfigError, load_config

SECRETS = {
    "DRIFTLINE__KAFKA__SECURITY__PASSWORD": "kafka-Secret-1",
    "DRIFTLINE_PII_KEY": "pii-Secret-0123456789",
    "DRIFTLINE_OPENAI_KEY": "sk-Secret-api",
    "DRIFTLINE__MONITORING__ALERTS__WEBHOOK_SECRET": "wh-Secret",
    "DRIFTLINE__SINKS__STORAGE_SECRETS__SECRET": "s3-Secret",
    "DRIFTLINE__DECODE__SCHEMA_REGISTRY__PASSWORD": "sr-Secret",
}

CONFIG = """
kafka:
  security: {protocol: SASL_PLAINTEXT, sasl_mechanism: SCRAM-SHA-256, username: etl}
decode:
  schema_registry: {url: "http://127.0.0.1:9/", username: sr}
models:
  backends:
    local: {kind: local}
    rules: {kind: rules}
    remote: {kind: openai, model: m, base_url: "http://127.0.0.1:9/v1", api_key_env: DRIFTLINE_OPENAI_KEY}
sinks:
  root: "s3://bucket/prefix"
  storage_options: {endpoint_url: "http://127.0.0.1:9000"}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "driftline.yaml"
    path.write_text(CONFIG)
    return path


def rotated(n: int) -> dict[str, str]:
    return {k: f"{v}-rotated-{n}" for k, v in SECRETS.items()}


def test_every_secret_is_read_and_typed(config_file: Path) -> None:
    cfg = load_config(config_file, env=SECRETS)
    assert cfg.kafka.security.password.get_secret_value() == "kafka-Secret-1"
    assert cfg.privacy.key.get_secret_value() == "pii-Secret-0123456789"
    assert cfg.models.backends["remote"].api_key.get_secret_value() == "sk-Secret-api"
    assert cfg.monitoring.alerts.webhook_secret.get_secret_value() == "wh-Secret"
    assert cfg.sinks.fsspec_options() == {"endpoint_url": "http://127.0.0.1:9000", "secret": "s3-Secret"}
    assert cfg.decode.schema_registry.password.get_secret_value() == "sr-Secret"
    assert cfg.kafka.client_config()["sasl.password"] == "kafka-Secret-1"
    for value in SECRETS.values():
        assert value not in repr(cfg) and value not in str(cfg.model_dump()) and value not in str(cfg.model_dump(mode="json"))


def test_config_show_prints_no_secret(config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert main(["config", "show", "--config", str(config_file)]) == 0
    out = capsys.readouterr()
    for name, value in SECRETS.items():
        assert value not in out.out + out.err, f"{name} printed"
    assert out.out.count("'**********'") == len(SECRETS)


def test_rotating_every_secret_keeps_the_hash(config_file: Path) -> None:
    hashes = {load_config(config_file, env=env).config_hash() for env in (SECRETS, rotated(1), rotated(2))}
    assert len(hashes) == 1
    changed = load_config(config_file, env={**SECRETS, "DRIFTLINE__KAFKA__INPUT_TOPIC": "other"}).config_hash()
    assert changed not in hashes


def test_secret_files_directory_and_file_variables(tmp_path: Path, config_file: Path) -> None:
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "kafka__security__password").write_text("from-dir\n")
    (secrets_dir / "SINKS__STORAGE_SECRETS__TOKEN").write_text("token-from-dir")
    key_file = tmp_path / "pii.key"
    key_file.write_text("key-from-file-0123456789\n")
    yaml_file = tmp_path / "with-key-file.yaml"
    yaml_file.write_text(CONFIG + f"privacy: {{key_file: {key_file}}}\n")
    hook = tmp_path / "hook"
    hook.write_text("hook-from-file")
    env = {"DRIFTLINE_SECRETS_DIR": str(secrets_dir), "DRIFTLINE__MONITORING__ALERTS__WEBHOOK_SECRET_FILE": str(hook), "DRIFTLINE__DECODE__SCHEMA_REGISTRY__PASSWORD": "123456"}
    cfg = load_config(yaml_file, env=env)
    assert cfg.kafka.security.password.get_secret_value() == "from-dir"
    assert cfg.sinks.storage_secrets["token"].get_secret_value() == "token-from-dir"
    assert cfg.privacy.key.get_secret_value() == "key-from-file-0123456789"
    assert cfg.monitoring.alerts.webhook_secret.get_secret_value() == "hook-from-file"
    assert cfg.decode.schema_registry.password.get_secret_value() == "123456"  # kept as text, not the number
    # the environment wins over the secrets directory
    assert load_config(yaml_file, env={**env, "DRIFTLINE__KAFKA__SECURITY__PASSWORD": "from-env"}).kafka.security.password.get_secret_value() == "from-env"


def test_secret_sources_fail_with_what_to_do(tmp_path: Path, config_file: Path) -> None:
    literal = tmp_path / "literal.yaml"
    literal.write_text(CONFIG.replace("username: etl}", "username: etl, password: hunter2}"))
    with pytest.raises(ConfigError, match=r"kafka.security.password: secrets are not read from the configuration file .*DRIFTLINE__KAFKA__SECURITY__PASSWORD") as err:
        load_config(literal, env={})
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="privacy.key_file: secret file not found"):
        load_config(None, env={"DRIFTLINE__PRIVACY__KEY_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match=r"needs password \(set \$DRIFTLINE__KAFKA__SECURITY__PASSWORD"):
        load_config(config_file, env={})
    odd_dir = tmp_path / "odd"
    odd_dir.mkdir()
    (odd_dir / "kafka__input_topic").write_text("x")
    with pytest.raises(ConfigError, match="not secrets"):
        load_config(None, env={"DRIFTLINE_SECRETS_DIR": str(odd_dir)})


def test_credentials_are_refused_in_plain_dictionaries() -> None:
    with pytest.raises(ConfigError, match="sasl.password: security settings are typed"):
        load_config(None, env={"DRIFTLINE__KAFKA__EXTRA": "{sasl.password: x}"})
    with pytest.raises(ConfigError, match="DRIFTLINE__SINKS__STORAGE_SECRETS__SECRET"):
        load_config(None, env={"DRIFTLINE__SINKS__STORAGE_OPTIONS": "{secret: x}"})


def test_security_settings_contradictions_and_librdkafka_mapping(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="need protocol SSL or SASL_SSL"):
        load_config(None, env={"DRIFTLINE__KAFKA__SECURITY__CA_FILE": str(ca)})
    with pytest.raises(ConfigError, match="need protocol SASL_PLAINTEXT or SASL_SSL"):
        load_config(None, env={"DRIFTLINE__KAFKA__SECURITY__USERNAME": "u"})
    with pytest.raises(ConfigError, match="ca_file: file not found"):
        load_config(None, env={"DRIFTLINE__KAFKA__SECURITY__PROTOCOL": "SSL", "DRIFTLINE__KAFKA__SECURITY__CA_FILE": str(tmp_path / "nope")})
    env = {
        "DRIFTLINE__KAFKA__SECURITY__PROTOCOL": "SSL",
        "DRIFTLINE__KAFKA__SECURITY__CA_FILE": str(ca),
        "DRIFTLINE__KAFKA__SECURITY__CERT_FILE": str(ca),
        "DRIFTLINE__KAFKA__SECURITY__PRIVATE_KEY_FILE": str(ca),
        "DRIFTLINE__KAFKA__SECURITY__PRIVATE_KEY_PASSWORD": "kp",
        "DRIFTLINE__KAFKA__SECURITY__ENDPOINT_IDENTIFICATION": "false",
    }
    conf = load_config(None, env=env).kafka.client_config({"group.id": "g"})
    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092",
        "group.id": "g",
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(ca),
        "ssl.key.location": str(ca),
        "ssl.key.password": "kp",
    }


def test_production_refuses_the_sample_pii_key() -> None:
    with pytest.raises(ConfigError, match="refuses the sample pseudonymization key"):
        load_config(None, env={"DRIFTLINE__MODE": "production", "DRIFTLINE_PII_KEY": "change-me-development-only"})
    assert load_config(None, env={"DRIFTLINE__MODE": "development", "DRIFTLINE_PII_KEY": "change-me-development-only"}).mode == "development"


def test_docker_compose_refuses_production_with_the_sample_key(tmp_path: Path) -> None:
    """The compose file's environment and secret, as Compose resolves them: the flows'
    configuration fails in production mode with the sample key and loads with a real one."""
    import re

    import yaml

    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())

    def resolve(value: str, shell: dict[str, str]) -> str:
        return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: shell.get(m.group(1), m.group(2)), value)

    def service_env(shell: dict[str, str]) -> dict[str, str]:
        secret = root / resolve(compose["secrets"]["pii_key"]["file"], shell)
        env = {k: resolve(str(v), shell) for k, v in compose["services"]["enrich"]["environment"].items()}
        assert env["DRIFTLINE__PRIVACY__KEY_FILE"] == "/run/secrets/pii_key" and compose["services"]["enrich"]["secrets"] == ["pii_key"]
        return {**env, "DRIFTLINE__PRIVACY__KEY_FILE": str(secret)}  # where Compose mounts it

    with pytest.raises(ConfigError, match="refuses the sample pseudonymization key"):
        load_config(None, env=service_env({"DRIFTLINE_MODE": "production"}))
    assert load_config(None, env=service_env({})).mode == "development"
    real = tmp_path / "pii_key"
    real.write_text("0f3c2a9d8e7b6a5c4d3e2f1a0b9c8d7e\n")
    cfg = load_config(None, env=service_env({"DRIFTLINE_MODE": "production", "DRIFTLINE_PII_KEY_FILE": str(real)}))
    assert cfg.mode == "production" and cfg.privacy.key.get_secret_value() == "0f3c2a9d8e7b6a5c4d3e2f1a0b9c8d7e"


def test_global_options_before_or_after_the_command(config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE__KAFKA__SECURITY__PASSWORD", "x")
    monkeypatch.setenv("DRIFTLINE__DECODE__SCHEMA_REGISTRY__PASSWORD", "y")
    assert main(["config", "show", "--config", str(config_file), "--log-level", "warning"]) == 0
    after = capsys.readouterr().out
    assert main(["-c", str(config_file), "config", "show"]) == 0
    assert capsys.readouterr().out == after and "username: etl" in after
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"driftline {__version__}"
    with pytest.raises(SystemExit):
        main(["run", "enrich", "--no-such-option"])
    assert "see `driftline run --help`" in capsys.readouterr().err
    assert main(["config", "show", "--config", str(config_file.with_name("missing.yaml"))]) == 2
    assert "pass an existing file with --config" in capsys.readouterr().err
