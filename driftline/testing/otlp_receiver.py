"""A small OTLP/HTTP traces receiver on loopback, for tests and benchmarks.

It accepts ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` (what the
OpenTelemetry OTLP/HTTP exporter sends, gzip or not), decodes it with the
``opentelemetry-proto`` package and keeps every span as a plain :class:`ReceivedSpan`.

    with OtlpReceiver() as rx:
        endpoint = rx.endpoint          # http://127.0.0.1:PORT/v1/traces
        ...
        spans = rx.spans()
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)
    status_code: int = 0
    service: str = ""


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def decode_request(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(), name=s.name, kind=s.kind,
                        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano, attributes={a.key: _value(a.value) for a in s.attributes},
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links], status_code=s.status.code, service=service,
                    )
                )  # fmt: skip
    return out


class OtlpReceiver:
    """The receiver; a context manager that listens on 127.0.0.1 (port 0: a free one)."""

    def __init__(self, port: int = 0, *, keep: bool = True) -> None:
        """``keep=False`` only counts the spans (``received``): benchmarks export millions."""
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.keep = keep
        self.requests = 0
        self.bad_requests = 0
        self.received = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path.rstrip("/") == "/v1/traces" and self.headers.get("Content-Type", "").startswith("application/x-protobuf")
                try:
                    spans = decode_request(body) if ok else []
                except Exception:  # noqa: BLE001 - a body that does not decode is a 400, as a collector answers
                    ok = False
                    spans = []
                with receiver._lock:
                    receiver.requests += 1
                    receiver.bad_requests += not ok
                    receiver.received += len(spans)
                    if receiver.keep:
                        receiver._spans.extend(spans)
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1/traces"

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


__all__ = ["OtlpReceiver", "ReceivedSpan", "decode_request"]
