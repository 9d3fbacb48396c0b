"""Pipeline-level Prometheus metrics, defined once.

Stage-specific metrics live next to their stage (``driftline.models.metrics``,
``driftline.operators.validation.metrics``, ``driftline.sinks.parquet.metrics``) and
register on the same default registry.  Labels are low-cardinality: flow, stage, reason
code (from a fixed or configured set); never an id, a tenant-supplied value or PII.

>>> import polars as pl
>>> observe_rejected("doc", pl.DataFrame({"stage": ["decode", "decode"], "reason_codes": [["bad_json"], ["bad_json"]]}))
2
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable
from typing import Any

import polars as pl
from prometheus_client import Counter, start_http_server

EVENTS_IN = Counter("driftline_events_in_total", "Raw messages read from Kafka.", ["flow"])
EVENTS_REJECTED = Counter("driftline_events_rejected_total", "Records refused, by stage and first reason code.", ["flow", "stage", "reason"])
EVENTS_OUT = Counter("driftline_events_out_total", "Records that passed every stage and were scored.", ["flow"])


def observe_in(flow: str, count: int) -> None:
    EVENTS_IN.labels(flow=flow).inc(count)


def observe_out(flow: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Count scored rows; returns the frame so it can sit in an ``op.map``."""
    if frame.height:
        EVENTS_OUT.labels(flow=flow).inc(frame.height)
    return frame


def observe_rejected(flow: str, rejected: pl.DataFrame) -> int:
    """Count refused rows by stage and first reason code (one vectorized group-by)."""
    if rejected.height == 0:
        return 0
    counts = rejected.group_by(pl.col("stage"), pl.col("reason_codes").list.first().fill_null("unknown").alias("reason")).len()
    for stage, reason, n in counts.iter_rows():
        # reason codes are drawn from the decoder's and the configured rules' names; a
        # code's suffix after ':' (a field name) is kept, the code never holds data.
        EVENTS_REJECTED.labels(flow=flow, stage=stage or "unknown", reason=reason).inc(n)
    return rejected.height


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on ``addr:port`` (a background thread)."""
    start_http_server(port, addr=addr)


# ----------------------------------------------------------------------------- step timers
#
# Switched on by the environment variable DRIFTLINE_STEP_TIMERS=<path of a JSON file>.
# The flows wrap every step function with :func:`timed` (a no-op that returns the function
# itself when timers are off, so the normal path costs nothing); the totals, the number of
# input events, the first-batch time and the process's RSS are written to the file about
# once a second and at exit.  bench/bench_e2e.py reads it for its per-step table.

TIMERS_ENV = "DRIFTLINE_STEP_TIMERS"


class StepTimers:
    """Wall-clock seconds and calls per step id, plus input events, written as JSON to ``path``.

    >>> import tempfile, json
    >>> t = StepTimers(tempfile.mktemp())
    >>> double = t.wrap("double", lambda x: 2 * x)
    >>> t.count_in(3); double(21), t.calls["double"]
    (42, 1)
    >>> t.write(); sorted(json.load(open(t.path))["steps"])
    ['double']
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.events_in = 0
        self.first_event_at: float | None = None  # time.time() of the first non-empty poll
        self.first_event_cpu: float | None = None  # this process's CPU seconds then
        self.started_at = time.time()
        self._last_write = 0.0
        self._peak_rss = 0

    def wrap(self, step_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds.setdefault(step_id, 0.0)
        self.calls.setdefault(step_id, 0)

        def timed_step(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.first_event_at is not None:  # waiting for the first records is start-up, not cost
                    self.seconds[step_id] += time.perf_counter() - t0
                    self.calls[step_id] += 1
                if t0 - self._last_write > 1.0:
                    self.write()

        return timed_step

    def count_in(self, n: int) -> None:
        if n and self.first_event_at is None:
            self.first_event_at = time.time()
            self.first_event_cpu = time.process_time()
        self.events_in += n

    def write(self) -> None:
        self._last_write = time.perf_counter()
        rss, hwm = _rss_bytes()
        self._peak_rss = max(self._peak_rss, hwm)
        doc = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "first_event_at": self.first_event_at,
            "written_at": time.time(),
            "events_in": self.events_in,
            "cpu_s": time.process_time(),  # user + system seconds of this process (all threads)
            "first_event_cpu_s": self.first_event_cpu,
            "rss_bytes": rss,
            "peak_rss_bytes": self._peak_rss,
            "steps": {k: {"seconds": self.seconds[k], "calls": self.calls[k]} for k in self.seconds},
        }
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.path)


def _rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process from /proc (0, 0 where unavailable)."""
    rss = hwm = 0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


_TIMERS: StepTimers | None = None


def step_timers() -> StepTimers | None:
    """The process's step timers when ``$DRIFTLINE_STEP_TIMERS`` is set, else None."""
    global _TIMERS
    path = os.environ.get(TIMERS_ENV)
    if not path:
        return None
    if _TIMERS is None or _TIMERS.path != path:
        _TIMERS = StepTimers(path)
        atexit.register(_TIMERS.write)
    return _TIMERS


def count_input(n: int) -> None:
    """Count ``n`` input events for the step timers (nothing when they are off)."""
    timers = step_timers()
    if timers is not None:
        timers.count_in(n)


def timed(step_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` timed under ``step_id`` when step timers are on; ``fn`` itself otherwise."""
    timers = step_timers()
    return fn if timers is None else timers.wrap(step_id, fn)


def timed_sink(step_id: str, sink: Any) -> Any:
    """Time the ``write_batch`` calls of every partition ``sink`` builds (when timers are on)."""
    if step_timers() is None:
        return sink
    return wrap_sink(sink, lambda write: timed(step_id, write))


def wrap_sink(sink: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Any:
    """Wrap the ``write_batch`` method of every partition ``sink`` builds with ``wrap``.

    Works for dynamic (``build``) and fixed-partitioned (``build_part``) sinks by wrapping
    the built partition's method on the instance; the sink's class is unchanged, so
    Bytewax sees the same sink.  Step timers and tracing (:mod:`driftline.tracing`) use it.
    """
    for name in ("build", "build_part"):
        builder = getattr(sink, name, None)
        if builder is None:
            continue

        def build(*args: Any, _builder: Callable[..., Any] = builder, **kwargs: Any) -> Any:
            part = _builder(*args, **kwargs)
            part.write_batch = wrap(part.write_batch)
            return part

        setattr(sink, name, build)
    return sink


def timed_logic(step_id: str, builder: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Time the callbacks (``on_batch``, ``on_notify``, ``on_eof``) of the stateful logic
    ``builder`` makes (when timers are on); ``builder`` itself otherwise."""
    if step_timers() is None:
        return builder
    return wrap_logic(builder, lambda cb: timed(step_id, cb))


def wrap_logic(builder: Callable[[Any], Any], wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[[Any], Any]:
    """A builder whose logic objects have ``on_batch``, ``on_notify`` and ``on_eof`` wrapped with ``wrap``."""

    def build(state: Any) -> Any:
        logic = builder(state)
        for name in ("on_batch", "on_notify", "on_eof"):
            setattr(logic, name, wrap(getattr(logic, name)))
        return logic

    return build
