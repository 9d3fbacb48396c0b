"""One typed pipeline configuration: YAML file plus environment overrides.

Every threshold, price, pattern and rule of driftline lives in :class:`PipelineConfig`.
Each section is a pydantic model in its own module of this package; the defaults are
documented on the fields and in ``docs/configuration.md``.

Environment overrides use ``DRIFTLINE__<SECTION>__<KEY>`` (double underscores between
levels, case-insensitive); values are parsed as YAML scalars, so ``true``, ``10`` and
``[a, b]`` work.  ``KAFKA_BOOTSTRAP_SERVERS`` is honoured as a shortcut for
``DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS``.

>>> cfg = load_config(None, env={"DRIFTLINE__KAFKA__INPUT_TOPIC": "tickets"})
>>> cfg.kafka.input_topic
'tickets'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftline.config.features import FeaturesConfig
from driftline.config.kafka import DecodeConfig, KafkaConfig
from driftline.config.models import ModelsConfig
from driftline.config.monitoring import MonitoringConfig
from driftline.config.privacy import PrivacyConfig
from driftline.config.sinks import SinksConfig
from driftline.config.validation import ValidationConfig

ENV_PREFIX = "DRIFTLINE__"


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key."""


class PipelineConfig(BaseModel):
    """Root of driftline's configuration."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["development", "production"] = Field(
        "development",
        description="production refuses to start without secrets such as the pseudonymization key.",
    )
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)

    def config_hash(self) -> str:
        """A short stable hash of the effective configuration (recorded in manifests)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def state_home() -> Path:
    """``$DRIFTLINE_HOME`` (default ``.driftline``): where local state (the development
    broker, default model-call ledger) lives."""
    return Path(os.environ.get("DRIFTLINE_HOME", ".driftline")).resolve()


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``DRIFTLINE__A__B=value`` variables into a nested override tree."""
    tree: dict[str, Any] = {}
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        _set_path(tree, ["kafka", "bootstrap_servers"], env["KAFKA_BOOTSTRAP_SERVERS"])
    for name, raw in env.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, path, value)
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"])
        loc = loc.replace(".[", "[")
        lines.append(f"  {loc or '<root>'}: {e['msg']}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Load and validate the configuration.

    Precedence, lowest first: defaults, the YAML file at ``path`` (or ``$DRIFTLINE_CONFIG``),
    environment overrides, then ``overrides`` (used by tests and the CLI).
    Raises :class:`ConfigError` naming each bad key.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    origin = "defaults"
    path = path or env.get("DRIFTLINE_CONFIG") or None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"configuration file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text("utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {p} must hold a mapping at the top level")
        data = loaded
        origin = str(p)
    data = _merge(data, env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


__all__ = ["ConfigError", "PipelineConfig", "env_overrides", "load_config", "state_home"]
