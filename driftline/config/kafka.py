"""Kafka and decoding settings.

Every Kafka client driftline creates (the flows' sources and sinks, topic creation, the
producer command, the demo, the test readers) takes its librdkafka settings from one
place, :meth:`KafkaConfig.client_config`, so the security settings apply everywhere.

>>> k = KafkaConfig(bootstrap_servers="b:9093", security={"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
...                 "username": "etl", "password": "hunter2"})
>>> conf = k.client_config()
>>> conf["security.protocol"], conf["sasl.mechanism"], conf["sasl.username"], conf["ssl.endpoint.identification.algorithm"]
('SASL_SSL', 'SCRAM-SHA-512', 'etl', 'https')
>>> k.security.password
SecretStr('**********')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

#: librdkafka properties that the typed ``kafka.security`` settings own; ``kafka.extra``
#: refuses them so a password never sits in a plain dictionary (or the config hash).
SECURITY_PROPERTY_PREFIXES: tuple[str, ...] = ("security.protocol", "sasl.", "ssl.", "ssl_")


class KafkaSecurityConfig(BaseModel):
    """Authentication and TLS towards the brokers (see docs/security.md)."""

    model_config = ConfigDict(extra="forbid")

    protocol: SecurityProtocol = Field("PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT (authentication without TLS) or SASL_SSL (both).")
    sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism for SASL_* protocols: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    username: str | None = Field(None, description="SASL user name.")
    password: SecretStr | None = Field(None, description="SASL password (secret: $DRIFTLINE__KAFKA__SECURITY__PASSWORD, ..._FILE or the secrets directory).")
    ca_file: str | None = Field(None, description="PEM file of the CA(s) that signed the brokers' certificates; unset: the system's trust store.")
    cert_file: str | None = Field(None, description="PEM client certificate, for brokers that require TLS client authentication.")
    private_key_file: str | None = Field(None, description="PEM private key of cert_file.")
    private_key_password: SecretStr | None = Field(None, description="Password of an encrypted private_key_file (secret).")
    endpoint_identification: bool = Field(True, description="Check that the broker's certificate names the host connected to (turn off only for test certificates).")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurityConfig:
        sasl = self.protocol.startswith("SASL_")
        tls = self.protocol.endswith("SSL")
        if sasl:
            missing = [n for n in ("sasl_mechanism", "username", "password") if getattr(self, n) is None]
            if missing:
                hint = " (set $DRIFTLINE__KAFKA__SECURITY__PASSWORD or $DRIFTLINE__KAFKA__SECURITY__PASSWORD_FILE)" if "password" in missing else ""
                raise ValueError(f"protocol {self.protocol} needs {', '.join(missing)}{hint}")
        elif any(getattr(self, n) is not None for n in ("sasl_mechanism", "username", "password")):
            raise ValueError(f"sasl_mechanism, username and password need protocol SASL_PLAINTEXT or SASL_SSL, not {self.protocol}")
        if not tls and any(getattr(self, n) is not None for n in ("ca_file", "cert_file", "private_key_file", "private_key_password")):
            raise ValueError(f"ca_file, cert_file and private_key_file need protocol SSL or SASL_SSL, not {self.protocol}")
        if (self.cert_file is None) != (self.private_key_file is None):
            raise ValueError("cert_file and private_key_file go together (TLS client authentication needs both)")
        for name in ("ca_file", "cert_file", "private_key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        return self

    def librdkafka(self) -> dict[str, Any]:
        """These settings as librdkafka properties."""
        conf: dict[str, Any] = {"security.protocol": self.protocol}
        if self.protocol.startswith("SASL_"):
            assert self.password is not None  # checked by the validator
            conf.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.username, "sasl.password": self.password.get_secret_value()})
        if self.protocol.endswith("SSL"):
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.endpoint_identification else "none"
            if self.ca_file:
                conf["ssl.ca.location"] = self.ca_file
            if self.cert_file:
                conf["ssl.certificate.location"] = self.cert_file
                conf["ssl.key.location"] = self.private_key_file
            if self.private_key_password is not None:
                conf["ssl.key.password"] = self.private_key_password.get_secret_value()
        return conf


class TransactionsConfig(BaseModel):
    """Transactional (exactly-once) Kafka outputs, ``kafka.delivery: exactly_once`` (see docs/reliability.md)."""

    model_config = ConfigDict(extra="forbid")

    id_prefix: str = Field("driftline", min_length=1, description="Prefix of the transactional ids and coverage consumer groups: <prefix>.<flow>.<input topic>.<output>.<partition>.")
    coverage_topic: str = Field("driftline.sink-coverage", min_length=1, description="Compacted topic holding what each sink partition's last transaction covered (created on first use).")
    partitions: int = Field(1, ge=1, le=256, description="Transactional producers per Kafka output (sink partitions), independent of the worker count (a multiple of it sends a topic-partition's records from the worker of its model calls); keep it while a recovery folder holds state.")
    timeout_ms: int = Field(60_000, ge=1_000, le=900_000, description="transaction.timeout.ms: an open transaction of a vanished producer is aborted after this long; also how long a commit waits for an unreachable broker.")
    max_bytes: int = Field(32 * 2**20, ge=2**16, description="An open transaction is committed early once its records reach this many bytes (they are kept until the commit, to be sent again if it must be aborted).")


class KafkaConfig(BaseModel):
    """Where events come from and where refusals and results go."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    input_topic: str = Field("events", description="Topic the enrich flow reads text events from.")
    telemetry_topic: str = Field("model-calls", description="Topic the monitor flow reads model-call telemetry from.")
    dead_letter_topic: str = Field("events.dlq", description="Refused records, original bytes unchanged.")
    output_topic: str = Field("events.enriched", description="Enriched, masked events as JSON.")
    metrics_topic: str = Field("driftline.metrics", description="Window results as JSON.")
    alerts_topic: str = Field("driftline.alerts", description="Alert and resolve events as JSON.")
    poll_batch_size: int = Field(8000, ge=1, le=100_000, description="Most messages taken per poll: the micro-batch size (a poll takes what has arrived, so a larger size costs no latency; the partitions of a worker take turns, so one poll is in flight).")
    poll_timeout_ms: int = Field(50, ge=1, le=10_000, description="How long one poll waits for messages.")
    idle_tick_ms: int = Field(500, ge=10, le=60_000, description="An empty micro-batch is emitted this often while idle so time-based flushes progress.")
    delivery: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="exactly_once: transactional outputs, each record once for read_committed consumers, visible at each epoch's commit; at_least_once: flushed per batch, repeats after a crash (brokers without transactions).",
    )
    transactions: TransactionsConfig = Field(default_factory=TransactionsConfig)
    security: KafkaSecurityConfig = Field(default_factory=KafkaSecurityConfig)
    extra: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties for every client (tuning such as client.id, socket.keepalive.enable); security settings go in kafka.security."
    )

    @field_validator("extra")
    @classmethod
    def _no_security_in_extra(cls, value: dict[str, str]) -> dict[str, str]:
        owned = sorted(k for k in value if k.startswith(SECURITY_PROPERTY_PREFIXES))
        if owned:
            raise ValueError(f"{', '.join(owned)}: security settings are typed, set them under kafka.security (protocol, sasl_mechanism, username, password, ca_file, ...)")
        return value

    def client_config(self, defaults: Mapping[str, Any] | None = None, *, bootstrap_servers: str | None = None) -> dict[str, Any]:
        """librdkafka settings for a consumer, producer or admin client: the brokers (or
        ``bootstrap_servers``), the client's own ``defaults`` (``group.id``, ``linger.ms``,
        ...), the security settings, then ``extra`` (which may tune the defaults).
        The result holds the secrets in clear: pass it to the client, never log it.

        >>> KafkaConfig(extra={"linger.ms": "50"}).client_config({"linger.ms": 5, "acks": "all"})
        {'bootstrap.servers': '127.0.0.1:9092', 'linger.ms': '50', 'acks': 'all', 'security.protocol': 'PLAINTEXT'}
        """
        return {"bootstrap.servers": bootstrap_servers or self.bootstrap_servers, **(defaults or {}), **self.security.librdkafka(), **self.extra}


class SchemaRegistryConfig(BaseModel):
    """A schema registry speaking Confluent's REST API, for payloads in Confluent's wire
    format (byte 0, a 4-byte schema id, the Avro datum)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="Base URL, e.g. http://registry:8081 (Confluent, Karapace) or http://registry:8080/apis/ccompat/v7 (Apicurio); unset: Confluent-framed records are refused (no_schema_registry).")
    username: str | None = Field(None, description="HTTP basic-auth user (Confluent Cloud: the API key).")
    password: SecretStr | None = Field(None, description="HTTP basic-auth password (secret: $DRIFTLINE__DECODE__SCHEMA_REGISTRY__PASSWORD, ..._FILE or the secrets directory).")
    ca_file: str | None = Field(None, description="PEM CA file for an https registry; unset: the system's trust store.")
    timeout_s: float = Field(2.0, gt=0, le=60, description="Timeout of one schema lookup.")
    retry_interval_s: float = Field(5.0, ge=0, le=3600, description="After the registry failed to answer, records needing a schema not yet cached are refused for this long without asking again.")
    unknown_id_ttl_s: float = Field(60.0, ge=0, le=86_400, description="An id the registry does not know is refused without asking again for this long.")

    @model_validator(mode="after")
    def _consistent(self) -> SchemaRegistryConfig:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (HTTP basic auth)")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"ca_file: file not found: {self.ca_file}")
        return self


class DecodeConfig(BaseModel):
    """Limits applied while decoding raw payloads, and the schema registry."""

    model_config = ConfigDict(extra="forbid")

    max_payload_bytes: int = Field(1_048_576, ge=64, description="Payloads larger than this are refused undecoded.")
    schema_registry: SchemaRegistryConfig = Field(default_factory=SchemaRegistryConfig)
