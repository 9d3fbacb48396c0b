"""In-process response cache of remote tiers: TTL plus least-recently-used bound.

The key is the SHA-256 of the task, the prompt version, the model and the masked,
sanitized input, so raw text is never a key and a prompt change invalidates entries.

>>> from driftline.clock import FakeClock
>>> clock = FakeClock()
>>> c = ResponseCache(max_entries=2, ttl_s=60, clock=clock)
>>> k = cache_key("sentiment", "v1", "gpt-4o-mini", "hello")
>>> c.put(k, CachedAnswer("positive", "{}", 0.9, "v", 0.001))
>>> c.get(k).label
'positive'
>>> _ = clock.advance(61); c.get(k) is None
True
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from driftline.clock import Clock, SystemClock


def cache_key(task: str, prompt_version: str, model: str, text: str) -> str:
    h = hashlib.sha256()
    for part in (task, prompt_version, model, text):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What a hit returns; ``cost_usd`` is what the original call cost (the saving)."""

    label: str | None
    output: str | None
    confidence: float | None
    model_version: str
    cost_usd: float


class ResponseCache:
    """Bounded TTL cache (not thread-safe: the model service uses it from one thread)."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Clock | None = None) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock or SystemClock()
        self._data: OrderedDict[str, tuple[datetime, CachedAnswer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> CachedAnswer | None:
        item = self._data.get(key)
        if item is None:
            return None
        stored_at, answer = item
        if (self.clock.now() - stored_at).total_seconds() > self.ttl_s:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._data[key] = (self.clock.now(), answer)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
