"""One typed pipeline configuration: YAML file plus environment overrides.

Every threshold, price, pattern and rule of driftline lives in :class:`PipelineConfig`.
Each section is a pydantic model in its own module of this package; the defaults are
documented on the fields and in ``docs/configuration.md``.

Environment overrides use ``DRIFTLINE__<SECTION>__<KEY>`` (double underscores between
levels, case-insensitive); values are parsed as YAML scalars, so ``true``, ``10`` and
``[a, b]`` work (secrets are kept as text).  ``KAFKA_BOOTSTRAP_SERVERS`` is honoured as
a shortcut for ``DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS``.  Secrets (:mod:`.secrets`) come
from the environment, ``*_FILE`` variables, ``$DRIFTLINE_SECRETS_DIR`` or files the YAML
names, never from the YAML itself; ``config_hash()`` leaves them out.

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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, NestedSecretsSettingsSource, SettingsConfigDict

from driftline.config.features import FeaturesConfig
from driftline.config.guardrails import GuardrailsConfig
from driftline.config.kafka import DecodeConfig, KafkaConfig
from driftline.config.models import ModelsConfig
from driftline.config.monitoring import MonitoringConfig
from driftline.config.privacy import SAMPLE_KEYS, PrivacyConfig
from driftline.config.recovery import RecoveryConfig
from driftline.config.secrets import SecretSourceError, is_secret_path, resolve_secret_files, secret_exclude
from driftline.config.sinks import SinksConfig
from driftline.config.tracing import TracingConfig
from driftline.config.validation import ValidationConfig

ENV_PREFIX = "DRIFTLINE__"
SECRETS_DIR_ENV = "DRIFTLINE_SECRETS_DIR"


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
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)

    @model_validator(mode="after")
    def _production_secrets(self) -> PipelineConfig:
        key = self.privacy.key
        if self.mode == "production" and key is not None and key.get_secret_value() in SAMPLE_KEYS:
            raise ValueError(f"privacy.key: production mode refuses the sample pseudonymization key; set ${self.privacy.key_env} or $DRIFTLINE__PRIVACY__KEY_FILE to a random key (e.g. `openssl rand -hex 32`)")
        return self

    @model_validator(mode="after")
    def _sections_agree(self) -> PipelineConfig:
        """Settings of one section that name things of another must find them there."""
        cols = self.monitoring.columns
        tiers = list(self.models.chain)
        if self.models.backends[tiers[-1]].kind != "rules":  # the service closes such a chain with a rules tier
            tiers.append("rules" if "rules" not in self.models.backends else "rules_final")
        if cols.primary_tier is None:
            cols.primary_tier = tiers[0]
        elif cols.primary_tier not in tiers:
            raise ValueError(f"monitoring.columns.primary_tier: tier {cols.primary_tier!r} is not in models.chain {tiers}; name the chain's first tier or leave it unset")
        return self

    def config_hash(self) -> str:
        """A short stable hash of the effective configuration (recorded in manifests and
        file footers).  Secrets and the recovery store's shape are left out: rotating a secret or
        rescaling keeps the hash."""
        exclude = {**secret_exclude(self), "recovery": True}  # the recovery store's shape changes no output
        payload = json.dumps(self.model_dump(mode="json", exclude=exclude), sort_keys=True).encode()
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
        if is_secret_path(PipelineConfig, path):
            value: Any = raw  # a password such as 123456 or yes stays text
        else:
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
        _set_path(tree, path, value)
    return tree


class _SecretFiles(PipelineConfig, BaseSettings):
    """The configuration's shape as pydantic-settings sees it: used to read the secrets
    directory (one file per secret, ``kafka__security__password``)."""

    model_config = SettingsConfigDict(extra="forbid", case_sensitive=False, secrets_nested_delimiter="__", secrets_dir_missing="error")


def secrets_dir_values(directory: str | Path) -> dict[str, Any]:
    """The secrets held in ``directory`` as a nested tree; a file there that is not a
    secret setting is refused (other settings belong in the YAML file)."""
    if not Path(directory).is_dir():
        raise ConfigError(f"${SECRETS_DIR_ENV}: {directory} is not a directory")
    tree = NestedSecretsSettingsSource(_SecretFiles, secrets_dir=directory)()

    def leaves(node: Any, path: list[str]) -> list[list[str]]:
        if isinstance(node, dict) and node:
            return [leaf for k, v in node.items() for leaf in leaves(v, [*path, str(k).lower()])]
        return [path]

    wrong = [".".join(p) for p in leaves(tree, []) if not is_secret_path(PipelineConfig, p)]
    if wrong:
        raise ConfigError(f"${SECRETS_DIR_ENV} ({directory}) holds files for settings that are not secrets ({', '.join(sorted(wrong))}); put those in the configuration file")
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _with_sections(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with an (empty) mapping for every nested section it leaves out, so each
    section is validated with the loader's context (its secrets read from ``env``)."""
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            value = data.setdefault(name, {})
            if isinstance(value, dict):
                _with_sections(sub, value)
    return data


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"])
        loc = loc.replace(".[", "[")
        lines.append(f"  {loc or '<root>'}: {e['msg']}")
    lines.append(f"fix the keys above in {origin if origin != 'defaults' else 'a configuration file'} or their DRIFTLINE__ environment variables; `driftline config reference` lists every key")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Load and validate the configuration.

    Precedence, lowest first: defaults, the YAML file at ``path`` (or ``$DRIFTLINE_CONFIG``),
    the secrets directory ``$DRIFTLINE_SECRETS_DIR``, environment overrides, then
    ``overrides`` (used by tests and the CLI).  ``<secret>_file`` entries are read;
    conventional secret variables (``$DRIFTLINE_PII_KEY``, a backend's ``api_key_env``)
    fill secrets left unset.  Raises :class:`ConfigError` naming each bad key.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    origin = "defaults"
    path = path or env.get("DRIFTLINE_CONFIG") or None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"configuration file not found: {p}; pass an existing file with --config (or fix $DRIFTLINE_CONFIG)")
        try:
            loaded = yaml.safe_load(p.read_text("utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {p} is not valid YAML (fix the line shown): {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {p} must hold a mapping at the top level (section names such as `kafka:`; see config/driftline.example.yaml)")
        data = loaded
        origin = str(p)
    try:
        resolve_secret_files(data, PipelineConfig, origin=origin, literal_allowed=False)
        if env.get(SECRETS_DIR_ENV):
            data = _merge(data, secrets_dir_values(env[SECRETS_DIR_ENV]))
        from_env = env_overrides(env)
        resolve_secret_files(from_env, PipelineConfig, origin="environment", literal_allowed=True)
        data = _merge(data, from_env)
    except SecretSourceError as exc:
        raise ConfigError(str(exc)) from None
    if overrides:
        data = _merge(data, overrides)
    try:
        return PipelineConfig.model_validate(_with_sections(PipelineConfig, data), context={"env": env})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


__all__ = ["ConfigError", "PipelineConfig", "env_overrides", "load_config", "state_home"]
