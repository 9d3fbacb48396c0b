"""Configuration section ``tracing``: OpenTelemetry spans exported over OTLP/HTTP (off by default).

>>> cfg = TracingConfig.model_validate({"enabled": True, "endpoint": "http://127.0.0.1:4318/v1/traces"})
>>> cfg.sample_ratio, cfg.max_links, cfg.record_steps
(0.01, 128, True)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class TracingConfig(BaseModel):
    """Spans per micro-batch and step, per record and step, and per provider request
    (see docs/operations.md, *Traces*).  Nothing of a record's content goes into a span."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Record and export spans. Off: a producer's traceparent is still passed on to the output topic and model requests, and its trace id stored.")
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint (an OpenTelemetry Collector, Jaeger, Tempo...).")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="HTTP headers of the export requests, e.g. an authorization token (secrets: set them through the environment or files).")
    service_name: str = Field("driftline", description="service.name of the resource.")
    sample_ratio: float = Field(
        0.01, ge=0.0, le=1.0,
        description="Share of records without a producer traceparent that get a trace (chosen on the new trace id). A producer's traceparent is followed: sampled, traced; unsampled, passed on unrecorded.",
    )  # fmt: skip
    record_steps: bool = Field(
        True, description="A span per traced record and step (children of its receive span). Off: per record only the receive span and the provider request spans; the steps' batch spans still link to the records."
    )
    max_links: int = Field(128, ge=0, le=10_000, description="Span links from a micro-batch's step span to the records it carried (the first ones).")
    export_timeout_s: float = Field(10.0, gt=0, description="Timeout of one export request.")
    max_queue_size: int = Field(65_536, ge=1, description="Finished spans waiting for export; beyond it spans are dropped (counted by the SDK), never the flow slowed.")
    max_export_batch_size: int = Field(2048, ge=1, description="Spans per export request.")
    schedule_delay_ms: int = Field(1000, ge=1, description="Longest wait before queued spans are exported.")

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {value!r} must be an http(s) URL of an OTLP/HTTP receiver (e.g. http://127.0.0.1:4318/v1/traces)")
        return value
