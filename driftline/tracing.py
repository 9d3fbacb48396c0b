"""Tracing with OpenTelemetry: spans per micro-batch and step, per record and step, and
per provider request, exported over OTLP/HTTP (``tracing.enabled``, off by default).

**Trace context of a record.**  A producer that traces its requests puts a W3C
``traceparent`` header on the Kafka record.  The source keeps it (``src_traceparent``);
:func:`trace_context`, right after decoding, checks it (version ``00``, lower-case hex,
non-zero ids; anything else is ignored and counted) and gives every valid row two columns:

- ``trace_id``: the 32 hex digits of its trace, stored in the ``enriched`` dataset, so a
  data team can go from a row to its trace;
- ``trace_parent``: the ``traceparent`` to propagate: into the model request's headers and
  the output record's headers, and the parent of the record's own spans.

With tracing off, both come from the producer's header unchanged (the trace is passed on,
nothing is recorded).  With tracing on, each record gets a ``receive`` span (kind
consumer, child of the producer's span; a new trace for a record without one, sampled by
``tracing.sample_ratio``; an unsampled producer trace is not recorded, as
parent-based sampling does), and ``trace_parent`` names that span.

**Spans of a step.**  Steps run on micro-batches, so every step records, per call:

- one *batch span* (``<step>``, root of its own trace: a batch is no single request's
  work) with the step, the rows in and out and the worker, and *span links* to the
  ``receive`` spans of the first ``tracing.max_links`` records it carried, as the
  messaging conventions do for batch processing;
- one *record span* per traced record (``<step>``, child of the record's ``receive``
  span, linked to the batch span), timed like the batch: that is the time the record
  spent in the step.  A record span per step is what lets a trace show where one event
  went; a span has one parent, so links alone would leave the record's trace without
  the steps.  Record spans are built directly as finished spans (the step already
  happened), which costs about a seventh of starting and ending a live span.

The provider request span (``chat <model>``, kind client, GenAI semantic conventions:
``gen_ai.operation.name``, ``gen_ai.provider.name``/``gen_ai.system``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``...) is made by
the OpenAI-compatible backend, as a child of the record's ``receive`` span, and its
``traceparent`` goes in the request's headers.

No span holds anything of a record's content: no text, no label, no event id, user,
tenant or key (any may be personal data); only step names, counts, source coordinates
(topic, partition, offset), model names and token counts.

>>> t, s, sampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
>>> format_traceparent(t, s, sampled)
'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
>>> parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
True
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import polars as pl
from prometheus_client import Counter

from driftline.config.tracing import TracingConfig

log = logging.getLogger("driftline.tracing")

INVALID_CONTEXT = Counter("driftline_trace_context_invalid_records_total", "Input records whose traceparent header was malformed (ignored).", ["flow"])

#: A valid version-00 traceparent (lower-case hex; the all-zero ids are refused separately).
TRACEPARENT_RE = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """``(trace id, parent span id, sampled)`` of a valid version-00 traceparent, else None."""
    if value is None or len(value) != 55 or not value.startswith("00-") or value[35] != "-" or value[52] != "-":
        return None
    try:
        trace_id, span_id, flags = int(value[3:35], 16), int(value[36:52], 16), int(value[53:55], 16)
    except ValueError:
        return None
    if not trace_id or not span_id or value[3:35] != value[3:35].lower() or value[36:52] != value[36:52].lower():
        return None
    return trace_id, span_id, bool(flags & 1)


def format_traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


# ----------------------------------------------------------------------------- the tracer


class Tracing:
    """The process's span pipeline: an SDK tracer provider with a batch processor and the
    OTLP/HTTP exporter.  Built by :func:`configure`; shared by every worker thread."""

    def __init__(self, cfg: TracingConfig, *, exporter: Any = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from driftline import __version__

        self.cfg = cfg
        self.resource = Resource.create({"service.name": cfg.service_name, "service.version": __version__})
        self.scope = InstrumentationScope("driftline", __version__)
        if exporter is None:
            exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers={k: v.get_secret_value() for k, v in cfg.headers.items()}, timeout=cfg.export_timeout_s)
        self.processor = BatchSpanProcessor(
            exporter, max_queue_size=cfg.max_queue_size, max_export_batch_size=min(cfg.max_export_batch_size, cfg.max_queue_size), schedule_delay_millis=cfg.schedule_delay_ms
        )
        self.provider = TracerProvider(resource=self.resource, sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("driftline", __version__)
        self._bound = round(cfg.sample_ratio * (1 << 64))  # TraceIdRatioBased's rule, for records without a parent
        self._rng = random.Random()
        self._lock = threading.Lock()

    # -- ids and finished spans ---------------------------------------------------
    def _ids(self, n: int, bits: int) -> list[int]:
        with self._lock:  # random.Random is not thread-safe across getrandbits calls on all builds
            return [self._rng.getrandbits(bits) or 1 for _ in range(n)]

    def _finished(self, name: str, trace_id: int, span_id: int, parent: Any, start: int, end: int, attributes: dict[str, Any], links: tuple[Any, ...] = (), kind: Any = None) -> None:
        """Hand one finished span to the export pipeline (no live span object is created)."""
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

        span = ReadableSpan(
            name=name, context=SpanContext(trace_id, span_id, False, TraceFlags(1)), parent=parent, resource=self.resource, attributes=attributes,
            links=links, kind=kind or SpanKind.INTERNAL, instrumentation_scope=self.scope, start_time=start, end_time=end,
        )  # fmt: skip
        self.processor.on_end(span)

    # -- records -------------------------------------------------------------------
    def receive(
        self, topics: list[str | None], partitions: list[int | None], offsets: list[int | None], parents: list[tuple[int, int, bool] | None], start_ns: int, end_ns: int
    ) -> tuple[list[str | None], list[str | None]]:
        """A ``receive`` span per sampled record; returns the rows' ``trace_id`` and ``trace_parent``."""
        from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

        n = len(parents)
        span_ids = self._ids(n, 64)
        new_traces = self._ids(sum(p is None for p in parents), 128)
        k = 0
        trace_ids: list[str | None] = []
        trace_parents: list[str | None] = []
        for i, p in enumerate(parents):
            if p is None:
                tid = new_traces[k]
                k += 1
                sampled, parent = (tid & 0xFFFFFFFFFFFFFFFF) < self._bound, None
            else:
                tid, pid, sampled = p
                parent = SpanContext(tid, pid, True, TraceFlags(1 if sampled else 0))
            if not sampled:  # passed on unrecorded
                trace_ids.append(f"{tid:032x}" if p is not None else None)
                trace_parents.append(format_traceparent(tid, p[1], False) if p is not None else None)
                continue
            attrs: dict[str, Any] = {"messaging.system": "kafka", "messaging.operation.type": "process", "messaging.operation.name": "process"}
            if topics[i] is not None:
                attrs["messaging.destination.name"] = topics[i]
            if partitions[i] is not None:
                attrs["messaging.destination.partition.id"] = str(partitions[i])
            if offsets[i] is not None:
                attrs["messaging.kafka.offset"] = int(offsets[i])  # type: ignore[arg-type]
            self._finished(f"process {topics[i] or 'input'}", tid, span_ids[i], parent, start_ns, end_ns, attrs, kind=SpanKind.CONSUMER)
            trace_ids.append(f"{tid:032x}")
            trace_parents.append(format_traceparent(tid, span_ids[i]))
        return trace_ids, trace_parents

    def step_spans(self, step: str, parents: list[str], start: int, end: int, attributes: dict[str, Any]) -> None:
        """The batch span of one call of ``step`` and a record span per traced record."""
        from opentelemetry.trace import Link, SpanContext, TraceFlags

        flags = TraceFlags(1)
        ctxs = []
        for tp in parents:
            p = parse_traceparent(tp)
            if p is not None:
                ctxs.append(SpanContext(p[0], p[1], True, flags))
        batch_trace, batch_span = self._ids(1, 128)[0], self._ids(1, 64)[0]
        attrs = {"driftline.step": step, "driftline.batch.traced_records": len(ctxs), **attributes}
        self._finished(step, batch_trace, batch_span, None, start, end, attrs, tuple(Link(c) for c in ctxs[: self.cfg.max_links]))
        if not ctxs or not self.cfg.record_steps:
            return
        back = (Link(SpanContext(batch_trace, batch_span, False, flags)),)
        record_attrs = {"driftline.step": step}
        for ctx, sid in zip(ctxs, self._ids(len(ctxs), 64)):
            self._finished(step, ctx.trace_id, sid, ctx, start, end, record_attrs, back)

    def request_span(self, name: str, traceparent: str | None, attributes: dict[str, Any]) -> Any:
        """A live client span for a provider request, child of ``traceparent`` (a context manager)."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        ctx = None
        p = parse_traceparent(traceparent)
        if p is not None:
            ctx = trace.set_span_in_context(NonRecordingSpan(SpanContext(p[0], p[1], True, TraceFlags(1 if p[2] else 0))))
        return self.tracer.start_as_current_span(name, context=ctx, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False)

    def flush(self, timeout_s: float = 30.0) -> bool:
        return bool(self.processor.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        self.provider.shutdown()


_CURRENT: Tracing | None = None
_CURRENT_CFG: TracingConfig | None = None
_SETUP = threading.Lock()


def configure(cfg: TracingConfig, *, exporter: Any = None) -> Tracing | None:
    """The process's :class:`Tracing` for ``cfg`` (None when off); a changed configuration
    flushes and replaces the previous one.  ``exporter``: a span exporter to use instead of
    OTLP/HTTP (tests)."""
    global _CURRENT, _CURRENT_CFG
    with _SETUP:
        if _CURRENT is not None and _CURRENT_CFG == cfg and exporter is None:
            return _CURRENT
        if _CURRENT is not None:
            _CURRENT.shutdown()
            _CURRENT = None
        _CURRENT_CFG = cfg
        if cfg.enabled:
            _CURRENT = Tracing(cfg, exporter=exporter)
            log.info(orjson.dumps({"event": "tracing_on", "endpoint": cfg.endpoint, "sample_ratio": cfg.sample_ratio}).decode())
        return _CURRENT


@atexit.register
def _export_at_exit() -> None:
    """Spans still queued when the process ends are exported (within the export timeout)."""
    if _CURRENT is not None:
        _CURRENT.shutdown()


def current() -> Tracing | None:
    """The configured :class:`Tracing`, or None when tracing is off."""
    return _CURRENT


# ----------------------------------------------------------------------------- columns


def trace_batch(batch: Any, start_ns: int | None = None, flow: str = "enrich") -> Any:
    """A :class:`~driftline.operators.batch.MicroBatch` with :func:`trace_context` applied to its valid rows."""
    return dataclasses.replace(batch, valid=trace_context(batch.valid, start_ns, flow))


def trace_context(frame: pl.DataFrame, start_ns: int | None = None, flow: str = "enrich") -> pl.DataFrame:
    """``frame`` (decoded rows with ``src_traceparent``) with ``trace_id`` and ``trace_parent``
    (see the module docstring); ``receive`` spans are recorded when tracing is on.

    >>> f = pl.DataFrame({"src_traceparent": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "junk", None]})
    >>> trace_context(f)["trace_id"].to_list()
    ['4bf92f3577b34da6a3ce929d0e0e4736', None, None]
    """
    n = frame.height
    src = frame["src_traceparent"] if "src_traceparent" in frame.columns else pl.repeat(None, n, dtype=pl.Utf8, eager=True)
    ok = src.str.contains(TRACEPARENT_RE).fill_null(False) & (src.str.slice(3, 32) != _ZERO_TRACE).fill_null(False) & (src.str.slice(36, 16) != _ZERO_SPAN).fill_null(False)
    bad = int((src.is_not_null() & ~ok).sum())
    if bad:
        INVALID_CONTEXT.labels(flow=flow).inc(bad)
    tracing = _CURRENT
    if tracing is None or n == 0:
        valid = pl.when(ok).then(src)
        return frame.with_columns(valid.str.slice(3, 32).alias("trace_id"), valid.alias("trace_parent"))
    parents = [parse_traceparent(v) if good else None for v, good in zip(src.to_list(), ok.to_list())]
    cols = frame.columns
    topics = frame["src_topic"].to_list() if "src_topic" in cols else [None] * n
    parts = frame["src_partition"].to_list() if "src_partition" in cols else [None] * n
    offsets = frame["src_offset"].to_list() if "src_offset" in cols else [None] * n
    ids, tps = tracing.receive(topics, parts, offsets, parents, start_ns or time.time_ns(), time.time_ns())
    return frame.with_columns(pl.Series("trace_id", ids, dtype=pl.Utf8), pl.Series("trace_parent", tps, dtype=pl.Utf8))


def traced_rows(item: Any) -> list[str]:
    """The sampled ``trace_parent`` values of the rows ``item`` carries (a frame, a
    micro-batch, model call output, Kafka records or lists and tuples of them)."""
    if isinstance(item, pl.DataFrame):
        if "trace_parent" not in item.columns or item.height == 0:
            return []
        return item.select(pl.col("trace_parent").filter(pl.col("trace_parent").str.ends_with("-01"))).to_series().to_list()
    if isinstance(item, (list, tuple)):
        if item and isinstance(item[0], tuple) and len(item[0]) == 3 and isinstance(item[0][2], list):  # Kafka records
            out = []
            for _k, _v, headers in item:
                for name, value in headers:
                    if name == "traceparent" and value and value.endswith(b"-01"):
                        out.append(value.decode("ascii"))
            return out
        return [tp for part in item for tp in traced_rows(part)]
    for attr in ("valid", "results"):  # MicroBatch, ModelCallOutput
        inner = getattr(item, attr, None)
        if isinstance(inner, pl.DataFrame):
            return traced_rows(inner)
    return []


def _count(item: Any) -> int:
    """Rows ``item`` carries (as :func:`traced_rows` reads it)."""
    if isinstance(item, pl.DataFrame):
        return item.height
    if isinstance(item, (list, tuple)):
        if item and isinstance(item[0], tuple) and len(item[0]) == 3 and isinstance(item[0][2], list):
            return len(item)
        return sum(_count(x) for x in item)
    for attr in ("valid", "results"):
        inner = getattr(item, attr, None)
        if isinstance(inner, pl.DataFrame):
            return inner.height
    return 0


# ----------------------------------------------------------------------------- wrappers


def traced(step_id: str, fn: Callable[..., Any], *, rows_from_input: bool = False) -> Callable[..., Any]:
    """``fn`` recording its step spans when tracing is on; ``fn`` itself otherwise.  Traced
    rows are those of the result (of the first argument with ``rows_from_input``: sinks)."""
    tracing = _CURRENT
    if tracing is None:
        return fn

    def traced_step(*args: Any, **kwargs: Any) -> Any:
        start = time.time_ns()
        result = fn(*args, **kwargs)
        end = time.time_ns()
        try:
            source = args[0] if (rows_from_input and args) else result
            parents = traced_rows(source)
            if not parents and not rows_from_input and args:
                parents = traced_rows(args[0])
            if parents or _count(source):
                tracing.step_spans(step_id, parents, start, end, {"driftline.batch.rows": _count(source), "thread.name": threading.current_thread().name})
        except Exception as exc:  # tracing must never stop the flow
            log.warning(orjson.dumps({"event": "tracing_error", "step": step_id, "error": type(exc).__name__}).decode())
        return result

    return traced_step


def traced_sink(step_id: str, sink: Any) -> Any:
    """Record spans for the ``write_batch`` calls of every partition ``sink`` builds (tracing on)."""
    from driftline.metrics import wrap_sink

    if _CURRENT is None:
        return sink
    return wrap_sink(sink, lambda write: traced(step_id, write, rows_from_input=True))


def traced_logic(step_id: str, builder: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Record spans for the callbacks of the stateful logic ``builder`` makes (tracing on)."""
    from driftline.metrics import wrap_logic

    if _CURRENT is None:
        return builder
    return wrap_logic(builder, lambda cb: traced(step_id, cb))


def step(step_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A step function with its timer (:func:`driftline.metrics.timed`) and its spans."""
    from driftline.metrics import timed

    return traced(step_id, timed(step_id, fn))


def sink(step_id: str, s: Any) -> Any:
    """A sink with its timer and its spans."""
    from driftline.metrics import timed_sink

    return traced_sink(step_id, timed_sink(step_id, s))


def logic(step_id: str, builder: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A stateful logic builder with its timer and its spans."""
    from driftline.metrics import timed_logic

    return traced_logic(step_id, timed_logic(step_id, builder))


def flush(timeout_s: float = 30.0) -> bool:
    """Export every finished span now (tests, shutdown); True when tracing is off."""
    return True if _CURRENT is None else _CURRENT.flush(timeout_s)


__all__ = [
    "Tracing",
    "configure",
    "current",
    "flush",
    "format_traceparent",
    "logic",
    "parse_traceparent",
    "sink",
    "step",
    "trace_batch",
    "trace_context",
    "traced",
    "traced_logic",
    "traced_rows",
    "traced_sink",
]
