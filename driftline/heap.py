"""Heap settings for a long-running flow process: the garbage collector, and the C heap.

A flow builds its long-lived objects at start-up (configuration, compiled patterns, the
VADER lexicon, ``phonenumbers``' metadata, Bytewax's graph) and then allocates tens of
thousands of short-lived containers per micro-batch.  With CPython's defaults (a young
collection every 700 net allocations) the collector ran about a thousand times per
100,000 events and re-scanned the start-up objects in every full collection: about 3 to
10 µs of CPU per event in the enrich flow (bench/bench_e2e.py's step timers and a
``gc.callbacks`` probe).  :func:`settle_heap` moves the start-up objects out of the
collector's view (``gc.freeze``) and lets the young generation grow larger before a
collection; reference counting still frees everything that is not in a cycle at once.
:func:`release_heap` undoes it when the flow ends (``driftline.runner.run_flow`` calls both).

The C heap (glibc's malloc, which holds Python's large objects: the Kafka records' bytes,
decoded strings, librdkafka's message copies) keeps the memory a micro-batch freed for
its next allocations, and fragments: in a 100,000-event run of the enrich flow about
90 MB of it sat free inside the heap at the peak, and Polars' and Arrow's allocators
then took their own pages beside it.  :class:`HeapTrimmer` hands that free memory back to
the system every second (glibc's ``malloc_trim``, from a thread of its own; the call
releases the interpreter lock): over seven same-run comparisons of the enrich flow
(bench/bench_e2e.py's ``no-heap-trim`` leg), peak RSS fell by about 90 MiB (about 1,020
to 935 MiB at 200,000 events; 1,033 to 988 MiB at a million), for about 4% of throughput
at 200,000 events (the pages handed back are faulted in again by the next batches;
docs/performance.md, "Memory").  Elsewhere (no glibc) it does nothing.

>>> import gc
>>> old = gc.get_threshold()
>>> before = settle_heap(); gc.get_threshold()[0] >= 10_000, gc.get_freeze_count() > 0
(True, True)
>>> release_heap(before); gc.get_threshold() == old, gc.get_freeze_count()
(True, 0)
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from typing import Any

#: Net container allocations before a young collection (CPython's default is 700).
YOUNG_THRESHOLD = 20_000


def settle_heap() -> tuple[int, int, int]:
    """Collect once, freeze what survived start-up, and raise the young-generation
    threshold; returns the thresholds before, for :func:`release_heap`."""
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, before[1], before[2])
    return before


def release_heap(thresholds: tuple[int, int, int]) -> None:
    """Undo :func:`settle_heap` once its flow has finished: the frozen objects go back to
    the collector and the cycles the finished flow left (sink partitions and their Kafka
    clients among them) are collected now, so a process that runs flow after flow (a
    test session, a replay) does not keep every earlier flow's clients alive."""
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()


#: Seconds between two trims of the C heap (``driftline run --heap-trim-interval``).
TRIM_INTERVAL_S = 1.0
#: The environment variable that sets ``--heap-trim-interval``'s default.
ENV_HEAP_TRIM = "DRIFTLINE_HEAP_TRIM_INTERVAL"


def _libc(name: str, argtypes: list[Any], restype: Any) -> Any:
    """The C library's function ``name``, typed, or None where it has none (musl, macOS).

    Looked up in the symbols the interpreter already has loaded (libc among them), so no
    ``ldconfig`` run is needed to find the library.
    """
    try:
        fn = getattr(ctypes.CDLL(None), name, None)
    except OSError:
        return None
    if fn is not None:
        fn.argtypes, fn.restype = argtypes, restype
    return fn


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


_MALLOC_TRIM = _libc("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
_MALLINFO2 = _libc("mallinfo2", [], _MallInfo2)


def c_heap() -> tuple[int, int] | None:
    """Bytes of the C heap in use and free inside it (glibc's ``mallinfo2``: every arena,
    plus the blocks it mapped on their own as in use), or None without glibc.  Python's
    large objects, librdkafka's copies and numpy's arrays live there; Polars and Arrow keep
    their own allocators.  A walk over the heap's free lists: call it about once a second,
    not per record (driftline/metrics.py's step timers do).

    >>> stats = c_heap()
    >>> stats is None or (stats[0] > 0 and stats[1] >= 0)
    True
    """
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd), int(info.fordblks)


class HeapTrimmer:
    """Gives the C heap's free memory back to the system every ``interval`` seconds.

    A daemon thread: it never keeps the process alive and needs no stopping, but
    :meth:`stop` ends it (tests).  :meth:`trim` is one trim, on the caller's thread; it
    returns False where there is no ``malloc_trim``.

    >>> t = HeapTrimmer(interval=0.01)
    >>> t.trim() in (True, False)
    True
    >>> t.start(); time.sleep(0.05); t.stop(); t.trims >= 1 or not t.available
    True
    """

    def __init__(self, interval: float = TRIM_INTERVAL_S) -> None:
        self.interval = interval
        self.trims = 0
        self.seconds = 0.0  # wall time spent in malloc_trim
        self._fn = _MALLOC_TRIM
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._fn is not None

    def trim(self) -> bool:
        if self._fn is None:
            return False
        started = time.perf_counter()
        self._fn(0)
        self.seconds += time.perf_counter() - started
        self.trims += 1
        return True

    def start(self) -> None:
        """Trim every ``interval`` seconds from a daemon thread (an interval of 0: never)."""
        if self._fn is None or self._thread is not None or self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="driftline-heap-trim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.trim()


_TRIMMER: HeapTrimmer | None = None


def start_heap_trimmer(interval: float = TRIM_INTERVAL_S) -> HeapTrimmer:
    """The process's :class:`HeapTrimmer`, started (once per process; the first call's
    ``interval`` holds)."""
    global _TRIMMER
    if _TRIMMER is None:
        _TRIMMER = HeapTrimmer(interval)
        _TRIMMER.start()
    return _TRIMMER
