"""Response cache of remote tiers (TTL plus least-recently-used bound) and the registry
of requests in flight, so identical inputs are sent once.

The key is the SHA-256 of the task, the prompt version, the model and the masked,
sanitized input, so raw text is never a key and a prompt change invalidates entries.
With a call ledger the cache is durable: every answer is stored in the ledger in the
transaction that records it, and a lookup that misses in memory reads the ledger, so
the cache survives restarts and rescales and is shared by the processes of a host.

>>> from driftline.clock import FakeClock
>>> clock = FakeClock()
>>> c = ResponseCache(max_entries=2, ttl_s=60, clock=clock)
>>> k = cache_key("sentiment", "v1", "gpt-4o-mini", "hello")
>>> c.put(k, CachedAnswer("positive", "{}", 0.9, "v", 0.001))
>>> c.get_many([k])[k].label
'positive'
>>> _ = clock.advance(61); c.get_many([k])
{}
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from driftline.clock import Clock, SystemClock

if TYPE_CHECKING:
    from driftline.models.ledger import CallLedger


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

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, blob: bytes) -> CachedAnswer:
        return cls(**orjson.loads(blob))


class ResponseCache:
    """Bounded TTL cache in memory, backed by the call ledger when there is one (thread-safe)."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Clock | None = None, ledger: CallLedger | None = None) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock or SystemClock()
        self.ledger = ledger
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[datetime, CachedAnswer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        """The fresh answers stored under ``keys`` (memory first, then the ledger)."""
        now = self.clock.now()
        found: dict[str, CachedAnswer] = {}
        missing: list[str] = []
        with self._lock:
            for key in keys:
                item = self._data.get(key)
                if item is not None and (now - item[0]).total_seconds() <= self.ttl_s:
                    self._data.move_to_end(key)
                    found[key] = item[1]
                else:
                    if item is not None:
                        del self._data[key]
                    missing.append(key)
        if missing and self.ledger is not None:
            stored = self.ledger.cached(missing, not_before=now.timestamp() - self.ttl_s)
            with self._lock:
                for key, (stored_at, blob) in stored.items():
                    answer = found[key] = CachedAnswer.decode(blob)
                    self._put(key, datetime.fromtimestamp(stored_at, now.tzinfo), answer)
        return found

    def put(self, key: str, answer: CachedAnswer) -> None:
        """Remember ``answer`` in memory (the ledger stores it in the answer's own transaction)."""
        with self._lock:
            self._put(key, self.clock.now(), answer)

    def _put(self, key: str, at: datetime, answer: CachedAnswer) -> None:
        self._data[key] = (at, answer)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


class Pending:
    """A request in flight that other batches wait for instead of sending it again."""

    __slots__ = ("_done", "value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.value: Any = None

    def wait(self, timeout_s: float) -> Any:
        """The leader's outcome, or None if it did not come within ``timeout_s``."""
        return self.value if self._done.wait(timeout_s) else None


class InFlight:
    """Cache keys being answered right now, shared by the batches of one process.

    >>> f = InFlight()
    >>> lead, p = f.lead_or_follow("k"); lead
    True
    >>> f.lead_or_follow("k")[0], f.peek("k") is p
    (False, True)
    >>> f.resolve("k", p, "answer"); p.wait(0), f.peek("k") is None
    ('answer', True)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}

    def peek(self, key: str) -> Pending | None:
        with self._lock:
            return self._pending.get(key)

    def lead_or_follow(self, key: str) -> tuple[bool, Pending]:
        """Register ``key`` as sent by the caller (``(True, p)``), or return the request to follow."""
        with self._lock:
            p = self._pending.get(key)
            if p is not None:
                return False, p
            p = self._pending[key] = Pending()
            return True, p

    def resolve(self, key: str, pending: Pending, value: Any) -> None:
        """Hand the leader's outcome to its followers (exactly once per registration)."""
        with self._lock:
            if self._pending.get(key) is pending:
                del self._pending[key]
        pending.value = value
        pending._done.set()

    def resolve_all(self, items: Sequence[tuple[str, Pending]], value: Any) -> None:
        for key, p in items:
            if not p._done.is_set():
                self.resolve(key, p, value)
