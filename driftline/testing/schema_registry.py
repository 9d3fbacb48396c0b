"""A loopback HTTP server speaking the part of Confluent's Schema Registry REST API that
serializers and driftline's decoder use, for tests on machines where no real registry
can run (see docs/security.md for what was tried).

Endpoints: ``POST /subjects/{subject}/versions`` (register; the same schema keeps its
id), ``POST /subjects/{subject}`` (look a schema up), ``GET /subjects/{subject}/versions/latest``,
``GET /schemas/ids/{id}``; unknown ids and subjects answer 404 with Confluent's error
codes (40403, 40401).  Real clients (confluent_kafka's ``AvroSerializer``, driftline's
:class:`~driftline.schemas.registry.SchemaRegistry`) talk to it over HTTP.

>>> reg = SchemaRegistryServer().start()
>>> import httpx
>>> httpx.post(f"{reg.url}/subjects/s-value/versions", json={"schema": '"string"'}).json()["id"]
1
>>> httpx.get(f"{reg.url}/schemas/ids/1").json()["schema"]
'"string"'
>>> httpx.get(f"{reg.url}/schemas/ids/9").status_code
404
>>> reg.stop()
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_REQUIRED = [
    {"name": "event_id", "type": "string"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "source", "type": "string"},
    {"name": "text", "type": "string"},
]
#: Writer schemas of an upstream producer whose schema evolved, as tests use them.
#: v1: the four required fields only (a reader fills tenant, user_id, attributes with defaults).
TEXT_EVENT_V1: dict[str, Any] = {"type": "record", "name": "TextEvent", "namespace": "dev.driftline.events", "fields": _REQUIRED}
#: v2: tenant and attributes, plus a field driftline's schema does not know (ignored).
TEXT_EVENT_V2: dict[str, Any] = {
    **TEXT_EVENT_V1,
    "fields": [
        *_REQUIRED,
        {"name": "tenant", "type": ["null", "string"], "default": None},
        {"name": "channel", "type": "string", "default": "web"},
        {"name": "attributes", "type": {"type": "map", "values": "string"}, "default": {}},
    ],
}


def confluent_serializer(registry_url: str, schema: dict[str, Any], topic: str = "events") -> Callable[[dict[str, Any]], bytes]:
    """confluent_kafka's own ``AvroSerializer`` for ``schema`` (registered on first use),
    as a producer would configure it: record -> Confluent-framed bytes."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    ser = AvroSerializer(SchemaRegistryClient({"url": registry_url}), json.dumps(schema))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return lambda record: ser(record, ctx)


class SchemaRegistryServer:
    """In-memory schemas by id and subject versions; ``start()`` and ``stop()`` may be
    called again (same port) to simulate an outage."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.schemas: dict[int, dict[str, Any]] = {}  # id -> {"schema": str, "schemaType": ...}
        self.subjects: dict[str, list[int]] = {}  # subject -> ids by version
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def register(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        """The id of ``schema`` (registered under ``subject`` if new to it)."""
        with self._lock:
            entry = {"schema": schema, "schemaType": schema_type}
            schema_id = next((i for i, e in self.schemas.items() if e == entry), None)
            if schema_id is None:
                schema_id = len(self.schemas) + 1
                self.schemas[schema_id] = entry
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def _handle(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path))
        path = path.split("?", 1)[0]
        if method == "GET" and (m := re.fullmatch(r"/schemas/ids/(\d+)", path)):
            entry = self.schemas.get(int(m.group(1)))
            if entry is None:
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, entry if entry["schemaType"] != "AVRO" else {"schema": entry["schema"]}
        if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)/versions", path)) and body:
            return 200, {"id": self.register(m.group(1), body["schema"], body.get("schemaType") or "AVRO")}
        if (m := re.fullmatch(r"/subjects/([^/]+)(?:/versions/latest)?", path)) and method in ("GET", "POST"):
            versions = self.subjects.get(m.group(1))
            if not versions:
                return 404, {"error_code": 40401, "message": "Subject not found"}
            if method == "POST":  # look a schema up under the subject
                matches = [i for i in versions if self.schemas[i]["schema"] == (body or {}).get("schema")]
                if not matches:
                    return 404, {"error_code": 40403, "message": "Schema not found"}
                schema_id = matches[0]
            else:
                schema_id = versions[-1]
            entry = self.schemas[schema_id]
            return 200, {"subject": m.group(1), "id": schema_id, "version": versions.index(schema_id) + 1, **entry}
        return 404, {"error_code": 404, "message": f"no route {method} {path}"}

    def start(self) -> SchemaRegistryServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, payload = owner._handle(method, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._reply("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._reply("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["TEXT_EVENT_V1", "TEXT_EVENT_V2", "SchemaRegistryServer", "confluent_serializer"]
