"""The call: a tier's backend answers the requests admission let through.

:func:`call_tier` hands results over as they complete, every request exactly once,
whatever the backend does: an open circuit breaker answers every request with
``circuit_open`` without calling, and a backend that crashes or misbehaves (an unknown
or repeated position, a missing result) has its unanswered requests filed as
``internal`` so no event is ever dropped.

>>> from driftline.models.base import ModelBackend
>>> from driftline.models.rows import Tier
>>> from driftline.config.models import BackendConfig
>>> class Broken(ModelBackend):
...     def call_batch(self, requests):
...         raise RuntimeError("boom")
>>> tier = Tier(0, "b", Broken("b", BackendConfig(kind="x"), {}), 0.0, False)
>>> [(j, r.error_class) for group in call_tier(tier, [ModelRequest("k", "t", "s")], 64) for j, r in group]
[(0, 'internal')]
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import orjson

from driftline.models.base import ResultsHook
from driftline.models.rows import Tier
from driftline.models.types import ModelRequest, ModelResult

log = logging.getLogger("driftline.models")


def call_tier(tier: Tier, requests: Sequence[ModelRequest], max_rows: int, on_results: ResultsHook | None = None) -> Iterator[list[tuple[int, ModelResult]]]:
    """Groups of ``(position, result)`` from the tier's backend as they complete
    (``on_results`` is given to the backend, see :class:`~driftline.models.base.Backend`)."""
    backend = tier.backend
    if backend.breaker is not None and not backend.breaker.allow():
        yield [(j, ModelResult.failure("circuit_open", "circuit breaker is open", model_name=backend.model)) for j in range(len(requests))]
        return
    seen: set[int] = set()
    try:
        # a backend never gets more than one batch (max_rows) at a time unless it streams
        for group in backend.iter_batch(requests, max_rows, on_results):
            fresh = [(j, r) for j, r in group if 0 <= j < len(requests) and j not in seen]
            if len(fresh) != len(group):
                raise RuntimeError(f"backend yielded an unknown or repeated position in {[j for j, _ in group]}")
            seen.update(j for j, _ in fresh)
            yield fresh
        if len(seen) != len(requests):
            raise RuntimeError(f"backend returned {len(seen)} results for {len(requests)} requests")
    except Exception as exc:  # a bug in a backend must not drop events
        log.error(orjson.dumps({"event": "model_backend_crash", "tier": tier.name, "error": type(exc).__name__}).decode())
        yield [(j, ModelResult.failure("internal", type(exc).__name__, model_name=backend.model)) for j in range(len(requests)) if j not in seen]
