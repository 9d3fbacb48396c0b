from __future__ import annotations

from pathlib import Path

import pytest

from driftline.config import ConfigError, PipelineConfig, env_overrides, load_config


def test_defaults_load_and_hash_is_stable() -> None:
    a = load_config(None, env={})
    b = load_config(None, env={})
    assert isinstance(a, PipelineConfig)
    assert a.config_hash() == b.config_hash()
    assert a.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_yaml_then_env_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  input_topic: from-file\n  poll_batch_size: 10\n")
    cfg = load_config(f, env={"DRIFTLINE__KAFKA__POLL_BATCH_SIZE": "20", "KAFKA_BOOTSTRAP_SERVERS": "h:1"}, overrides={"kafka": {"input_topic": "from-test"}})
    assert (cfg.kafka.input_topic, cfg.kafka.poll_batch_size, cfg.kafka.bootstrap_servers) == ("from-test", 20, "h:1")


def test_env_values_are_yaml_scalars() -> None:
    assert env_overrides({"DRIFTLINE__SINKS__FLUSH_SECONDS": "2.5", "DRIFTLINE__KAFKA__EXTRA": "{a: b}", "OTHER": "x"}) == {"sinks": {"flush_seconds": 2.5}, "kafka": {"extra": {"a": "b"}}}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kafka:\n  poll_batch_size: 0\n", "kafka.poll_batch_size"),
        ("kafka:\n  no_such_key: 1\n", "kafka.no_such_key"),
        ("mode: staging\n", "mode"),
        ("- a\n- b\n", "mapping at the top level"),
        ("kafka: [\n", "not valid YAML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert needle in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})
