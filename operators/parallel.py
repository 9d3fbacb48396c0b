"""Native per-item work that releases the interpreter lock, split over two threads.

A Bytewax worker is one thread, so a stage runs on one core however many the machine
has.  Some stages spend most of a call in native code that releases the interpreter lock
(CLD2's detector: about 80% of the ``features`` stage's language detection runs without
it).  :func:`split_map` runs such a function on the second half of a list in a side
thread while the calling thread runs the first half, so the two halves use two cores;
the results come back in the list's order, exactly as one call would give them.

The side thread is one per process, started at first use and shared by every caller (a
process with several workers queues their second halves on it).  Nothing is split on a
single-CPU machine or for a short list, where the hand-over would cost more than it saves.

>>> split_map(lambda xs: [x * 2 for x in xs], list(range(5)))
[0, 2, 4, 6, 8]
>>> split_map(lambda xs: [x * 2 for x in xs], list(range(1000)), min_items=10)[-3:]
[1994, 1996, 1998]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Shortest list worth splitting (CLD2: about 15 µs per 500-character text, so 256 texts
#: are about 4 ms of work against tens of microseconds to hand half of it over).
SPLIT_MIN_ITEMS = 256

_lock = threading.Lock()
_side: ThreadPoolExecutor | None = None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _side_thread() -> ThreadPoolExecutor:
    global _side
    with _lock:
        if _side is None:
            _side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-side")
        return _side


def split_map(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], *, min_items: int = SPLIT_MIN_ITEMS) -> list[R]:
    """``fn(items)``, computed as ``fn(first half) + fn(second half)`` on two threads when
    ``items`` has at least ``min_items`` and the process may use more than one CPU.

    ``fn`` must give one result per item, independently of the other items, and be safe
    to call from two threads at once; it pays only where it releases the interpreter lock.
    An exception from either half is raised here (the first half's first).
    """
    if len(items) < min_items or _cpus() < 2:
        return fn(items)
    half = len(items) // 2
    second = _side_thread().submit(fn, items[half:])
    try:
        first = fn(items[:half])
    except BaseException:
        wait([second])  # the side thread is shared: leave it idle
        raise
    return first + second.result()
