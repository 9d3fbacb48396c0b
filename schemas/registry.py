"""A read-only client of a schema registry speaking Confluent's REST API, with a cache.

Only ``GET /schemas/ids/{id}`` is used (Confluent Schema Registry, Karapace and
Apicurio's ``/apis/ccompat/v7`` answer it).  Schemas are immutable per id, so a fetched
schema is kept for the life of the process and keeps decoding while the registry is
down.  Failures are remembered so that one unreachable registry or one unknown id costs
one request, not one per record: after the registry failed to answer, uncached ids are
refused for ``retry_interval_s``; an id the registry does not know, for
``unknown_id_ttl_s``.  Every refusal is a :class:`RegistryError` with a reason code.

One :class:`SchemaRegistry` per configuration is shared by a process's decoders
(:func:`registry_for`); it is thread-safe.

>>> from driftline.config.kafka import SchemaRegistryConfig
>>> registry_for(SchemaRegistryConfig()) is None      # no URL configured
True
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastavro import parse_schema

from driftline.config.kafka import SchemaRegistryConfig

REGISTRY_REASONS: dict[str, str] = {
    "no_schema_registry": "the payload starts with byte 0 (Confluent's wire format: schema id, Avro datum) but decode.schema_registry.url is not set",
    "unknown_schema_id": "the schema registry does not know the payload's schema id",
    "schema_registry_unavailable": "the schema registry did not answer and the payload's schema is not cached",
    "unsupported_schema": "the registry's schema for the id is not an Avro schema the decoder can read",
}


class RegistryError(Exception):
    """A schema id that cannot be resolved; ``code`` is one of :data:`REGISTRY_REASONS`."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


class SchemaRegistry:
    """Writer schemas by id, fetched once (see the module docstring for the failure rules)."""

    def __init__(self, cfg: SchemaRegistryConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not cfg.url:
            raise ValueError("decode.schema_registry.url is not set")
        self.url = cfg.url.rstrip("/")
        self.cfg = cfg
        self._clock = clock
        auth = (cfg.username, cfg.password.get_secret_value()) if cfg.username and cfg.password else None
        self._http = httpx.Client(
            auth=auth,
            verify=cfg.ca_file or True,
            timeout=cfg.timeout_s,
            headers={"Accept": "application/vnd.schemaregistry.v1+json, application/json"},
        )
        self._lock = threading.Lock()
        self._schemas: dict[int, dict[str, Any]] = {}
        self._unknown: dict[int, float] = {}  # id -> refuse without asking until
        self._down_until = 0.0
        self._down_reason = ""
        self.requests = 0

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The parsed Avro schema registered under ``schema_id``; raises :class:`RegistryError`."""
        with self._lock:
            cached = self._schemas.get(schema_id)
            if cached is not None:
                return cached
            now = self._clock()
            if self._unknown.get(schema_id, 0.0) > now:
                raise RegistryError("unknown_schema_id", f"id {schema_id} (remembered)")
            if self._down_until > now:
                raise RegistryError("schema_registry_unavailable", f"id {schema_id}: {self._down_reason} (retrying in {self._down_until - now:.1f} s)")
        schema = self._fetch(schema_id)
        with self._lock:
            self._schemas[schema_id] = schema
        return schema

    def _fail(self, code: str, detail: str, schema_id: int) -> RegistryError:
        with self._lock:
            if code == "unknown_schema_id":
                self._unknown[schema_id] = self._clock() + self.cfg.unknown_id_ttl_s
            else:
                self._down_until, self._down_reason = self._clock() + self.cfg.retry_interval_s, detail
        return RegistryError(code, f"id {schema_id}: {detail}")

    def _fetch(self, schema_id: int) -> dict[str, Any]:
        self.requests += 1
        try:
            resp = self._http.get(f"{self.url}/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise self._fail("schema_registry_unavailable", f"{type(exc).__name__} from {self.url}", schema_id) from None
        if resp.status_code == 404:
            raise self._fail("unknown_schema_id", "not found in the registry", schema_id)
        if resp.status_code != 200:
            raise self._fail("schema_registry_unavailable", f"HTTP {resp.status_code} from {self.url}", schema_id)
        try:
            body = resp.json()
            kind = body.get("schemaType", "AVRO")
            if kind != "AVRO":
                raise ValueError(f"schemaType {kind}")
            return parse_schema(json.loads(body["schema"]))
        except Exception as exc:  # a non-Avro or unparsable schema: refuse its records, keep the id
            with self._lock:
                self._unknown[schema_id] = self._clock() + self.cfg.unknown_id_ttl_s
            raise RegistryError("unsupported_schema", f"id {schema_id}: {type(exc).__name__}: {str(exc)[:120]}") from None

    def close(self) -> None:
        self._http.close()


_REGISTRIES: dict[str, SchemaRegistry] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry_for(cfg: SchemaRegistryConfig) -> SchemaRegistry | None:
    """The process's :class:`SchemaRegistry` for ``cfg`` (one per distinct setting, so the
    cache is shared by every decoder of the process), or None when no URL is set."""
    if not cfg.url:
        return None
    key = json.dumps([cfg.model_dump(mode="json"), cfg.password.get_secret_value() if cfg.password else None])
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = _REGISTRIES[key] = SchemaRegistry(cfg)
        return registry


__all__ = ["REGISTRY_REASONS", "RegistryError", "SchemaRegistry", "registry_for"]
