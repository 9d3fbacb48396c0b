"""Garbage-collector settings for a long-running flow process.

A flow builds its long-lived objects at start-up (configuration, compiled patterns, the
VADER lexicon, ``phonenumbers``' metadata, Bytewax's graph) and then allocates tens of
thousands of short-lived containers per micro-batch.  With CPython's defaults (a young
collection every 700 net allocations) the collector ran about a thousand times per
100,000 events and re-scanned the start-up objects in every full collection: about 3 to
10 µs of CPU per event in the enrich flow (bench/bench_e2e.py's step timers and a
``gc.callbacks`` probe).  :func:`settle_heap` moves the start-up objects out of the
collector's view (``gc.freeze``) and lets the young generation grow larger before a
collection; reference counting still frees everything that is not in a cycle at once.

>>> import gc
>>> old = gc.get_threshold()
>>> settle_heap(); gc.get_threshold()[0] >= 10_000
True
>>> gc.unfreeze(); gc.set_threshold(*old)
"""

from __future__ import annotations

import gc

#: Net container allocations before a young collection (CPython's default is 700).
YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Collect once, freeze what survived start-up, and raise the young-generation threshold."""
    gc.collect()
    gc.freeze()
    _, mid, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, mid, old)
