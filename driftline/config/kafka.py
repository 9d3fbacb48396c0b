"""Kafka and decoding settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
    poll_batch_size: int = Field(1000, ge=1, le=100_000, description="Most messages taken per poll: the micro-batch size.")
    poll_timeout_ms: int = Field(50, ge=1, le=10_000, description="How long one poll waits for messages.")
    idle_tick_ms: int = Field(500, ge=10, le=60_000, description="An empty micro-batch is emitted this often while idle so time-based flushes progress.")
    extra: dict[str, str] = Field(default_factory=dict, description="Extra librdkafka properties (security, SASL, ...).")


class DecodeConfig(BaseModel):
    """Limits applied while decoding raw payloads."""

    model_config = ConfigDict(extra="forbid")

    max_payload_bytes: int = Field(1_048_576, ge=64, description="Payloads larger than this are refused undecoded.")
