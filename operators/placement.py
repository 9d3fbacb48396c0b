"""Where Bytewax runs each keyed step and sink partition, and how to even out the rest.

Bytewax places work by rules that can be computed ahead of time:

- a stateful step's key goes to worker ``hash(key) % workers``, where ``hash`` is Rust's
  ``DefaultHasher`` (SipHash-1-3 with zero keys) over the key's bytes and a ``0xff``
  terminator, the way Rust hashes a ``String`` (:func:`state_worker`);
- a partitioned sink's partitions (the same list on every worker) are given out in the
  order of their sorted names, each to the worker with the fewest so far, lowest index
  first: the partition at sorted position ``i`` is on worker ``i % workers``, and an item
  whose ``part_fn`` returns ``i`` goes to that position (:func:`sink_worker`);
- a partitioned source's partitions the same way (:func:`source_worker`).

So with 3 input partitions on 2 workers the per-partition work (the model step, the
guardrails, the output records, the event-time clocks) and the sink partitions may all
land on one worker.  The stateless stages before the ``reorder`` step can run anywhere;
:func:`water_fill` gives them out so that every worker's expected load is even, and
:func:`worker_keys` names one key per worker so that a stateful pass-through step can
send a piece to the worker chosen for it (Bytewax has no "send to worker" operator).

>>> [state_worker(k, 2) for k in ("t:0", "t:1", "t:2")]
[1, 0, 1]
>>> water_fill([0.5, 0.1], 0.4)   # worker 1 gets the free work until both carry 0.5
[0.0, 1.0]
>>> [state_worker(k, 3) for k in worker_keys(3)]
[0, 1, 2]
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

_M = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash13(data: bytes) -> int:
    """SipHash-1-3 of ``data`` with keys (0, 0): Rust's ``DefaultHasher::new()``.

    >>> hex(siphash13(b""))
    '0xd1fba762150c532c'
    """
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573
    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        (m,) = struct.unpack_from("<Q", data, i)
        v3 ^= m
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= m
    b = (n & 0xFF) << 56
    for i, c in enumerate(data[end:]):
        b |= c << (8 * i)
    v3 ^= b
    v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


#: The most sink partitions whose placement :func:`sink_worker` knows (Rust sorts at most 20 equal keys stably).
MAX_PLACED_PARTS = 20


@lru_cache(maxsize=4096)
def state_worker(key: str, workers: int) -> int:
    """The worker (0-based, cluster-wide) that Bytewax 0.21 gives a stateful step's ``key``."""
    return siphash13(key.encode() + b"\xff") % workers if workers > 1 else 0


def sink_worker(part: int, parts: int, workers: int) -> int:
    """The worker of a partitioned sink's items routed to ``part`` of ``parts`` (names ``"0"``..).

    Bytewax indexes the sorted names by ``part_fn``'s result and gives out the sorted
    names round-robin; it sorts them stably only while there are at most 20 partitions,
    so more than 20 are rejected rather than guessed.
    """
    if parts > MAX_PLACED_PARTS:
        raise ValueError(f"sink_worker: {parts} sink partitions; the placement model holds for at most {MAX_PLACED_PARTS}")
    return (part % parts) % workers if workers > 1 else 0


def source_worker(name: str, names: Sequence[str], workers: int) -> int:
    """The worker that reads source partition ``name`` of ``names`` (the source's ``list_parts``)."""
    return sorted(names).index(name) % workers if workers > 1 else 0


def source_part(topic: str, partition: int | str) -> str:
    """The Kafka source's name of input partition ``partition`` of ``topic``
    (``partition-topic``): its recovery state is stored under this name, so it never
    changes; :func:`source_part_coordinates` reads it back.

    >>> source_part("events", 2)
    '2-events'
    """
    return f"{partition}-{topic}"


def source_part_coordinates(part: str) -> tuple[str, int]:
    """``(topic, partition)`` of a Kafka source part name (:func:`source_part`); topic
    names may hold ``-``, partition numbers cannot.

    >>> source_part_coordinates("2-bench-e2e-4d")
    ('bench-e2e-4d', 2)
    """
    idx, sep, topic = part.partition("-")
    if not sep or not idx.isdigit() or not topic:
        raise ValueError(f"not a Kafka source part name (partition-topic): {part!r}")
    return topic, int(idx)


def reorder_key(name: str) -> str:
    """The ``reorder`` and model-step key (``topic:partition``, as
    :func:`driftline.operators.spread.partition_key` makes it from a batch) of input
    partition ``name`` (``topic+partition``).

    >>> reorder_key("events+2")
    'events:2'
    """
    topic, _, part = name.rpartition("+")
    return f"{topic}:{part}"


def cover_part(cover: str, parts: int) -> int:
    """The sink partition of a cover: the one routing rule of the Parquet datasets' and the
    transactional Kafka sink's partitions, which both call it.

    An input partition (``topic+partition``) goes where Bytewax would put its model-step
    key (``topic:partition``, :func:`reorder_key`) among ``parts`` workers: the sink
    partition at sorted position ``i`` runs on worker ``i % workers``
    (:func:`sink_worker`), so whenever the worker count divides ``parts`` (the advice is
    ``parts`` = the most workers you will run) a topic-partition's writers share a worker
    with its model calls and its scored rows are written where they are made, instead of
    crossing to another worker (another process: pickled) first.  Any other cover (a
    window key) by the same hash of itself.  (CRC-32 modulo ``parts`` did this before; its
    low bits are linear in the input's, so partitions 0 to 3 of a topic always shared one
    writer of two.)

    >>> cover_part("events+2", 1), [cover_part(f"events+{p}", 2) for p in range(4)]
    (0, [0, 0, 1, 0])
    >>> all(cover_part(f"t+{p}", 4) % 2 == state_worker(f"t:{p}", 2) for p in range(8))
    True
    """
    if parts <= 1:
        return 0
    _, sep, part = cover.rpartition("+")
    return state_worker(reorder_key(cover) if sep and part.isdigit() else cover, parts)


def water_fill(fixed: Sequence[float], free: float) -> list[float]:
    """The shares of ``free`` work per worker that even out the ``fixed`` loads the most.

    The free work fills the least loaded workers first, up to a common level (no worker
    is given any if its fixed load is already above it); the shares sum to 1.

    >>> water_fill([0.3, 0.1, 0.1], 0.3)
    [0.0, 0.5, 0.5]
    >>> water_fill([0.0, 0.0], 0.0)
    [0.5, 0.5]
    """
    n = len(fixed)
    if n == 0:
        return []
    if free <= 0:
        return [1.0 / n] * n
    order = sorted(fixed)
    level = order[0] + free
    for k in range(1, n + 1):  # the level when the k least loaded workers share the free work
        level = (sum(order[:k]) + free) / k
        if k == n or level <= order[k]:
            break
    shares = [max(0.0, level - f) / free for f in fixed]
    total = sum(shares)
    return [s / total for s in shares]


@lru_cache(maxsize=64)
def worker_keys(workers: int) -> tuple[str, ...]:
    """One stateful key per worker, ``workers`` long: key ``i`` goes to worker ``i``.

    >>> worker_keys(2)
    ('w0', 'w1.5')
    """
    keys = []
    for w in range(workers):
        k = next(c for c in (f"w{w}" if i == 0 else f"w{w}.{i}" for i in range(10_000)) if state_worker(c, workers) == w)
        keys.append(k)
    return tuple(keys)


#: What one event costs where, as shares of the enrich flow's CPU on one worker (bench_e2e,
#: 200,000 events, per-step timers; the Bytewax overhead spread in proportion):
#: ``free`` the stateless stages before ``reorder`` (decode, validation, masking, features,
#: sanitizing: placed by :func:`water_fill`); ``partition`` the steps keyed by
#: ``topic:partition`` (reorder, model calls, guardrails, output records); ``event_time`` the
#: event-time clocks keyed by ``topic+partition``; ``parquet`` and ``kafka`` the sink
#: partitions of an input partition; ``read`` the source partition's reader; ``even`` what
#: spreads by itself (window shards, window keys).  Measured on the enrich flow; the monitor
#: flow, whose work after ``reorder`` is lighter, uses the same weights.
COSTS: Mapping[str, float] = {"free": 0.42, "partition": 0.27, "event_time": 0.04, "parquet": 0.13, "kafka": 0.08, "read": 0.02, "even": 0.04}


def fixed_loads(partitions: Iterable[str], workers: int, *, parquet_parts: int = 1, kafka_parts: int = 1, costs: Mapping[str, float] = COSTS) -> list[float]:
    """Each worker's expected load outside the free stages, for input ``partitions``
    (``topic+partition`` names, assumed to carry equal traffic), in shares of the flow's work.

    >>> [round(x, 3) for x in fixed_loads(["t+0", "t+1", "t+2"], 2)]
    [0.36, 0.22]
    """
    names = sorted(partitions)
    loads = [costs.get("even", 0.0) / workers] * workers
    if not names:
        return loads
    each = 1.0 / len(names)
    source_names = [source_part(topic, part) for topic, _, part in (n.rpartition("+") for n in names)]
    for name, src in zip(names, source_names, strict=True):
        loads[state_worker(reorder_key(name), workers)] += costs.get("partition", 0.0) * each
        loads[state_worker(name, workers)] += costs.get("event_time", 0.0) * each
        for parts, cost in ((parquet_parts, costs.get("parquet", 0.0) * each), (kafka_parts, costs.get("kafka", 0.0) * each)):
            if parts <= MAX_PLACED_PARTS:
                loads[sink_worker(cover_part(name, parts), parts, workers)] += cost
            else:  # placement unknown: assume even
                loads = [x + cost / workers for x in loads]
        loads[source_worker(src, source_names, workers)] += costs.get("read", 0.0) * each
    return loads


def free_shares(partitions: Iterable[str], workers: int, *, parquet_parts: int = 1, kafka_parts: int = 1, costs: Mapping[str, float] = COSTS) -> list[float]:
    """The share of the free stages' rows each worker should run (see :func:`water_fill`).

    >>> [round(s, 2) for s in free_shares(["t+0", "t+1", "t+2"], 2)]
    [0.33, 0.67]
    """
    return water_fill(fixed_loads(partitions, workers, parquet_parts=parquet_parts, kafka_parts=kafka_parts, costs=costs), costs.get("free", 0.0))


def local_plan(homes: Mapping[str, int], shares: Sequence[float]) -> dict[str, list[float]]:
    """How to give out each partition's rows so that the workers run ``shares`` of all
    rows and as many rows as possible run on their partition's ``homes`` worker (where the
    ``reorder`` step brings them back: a row processed there does not cross to another
    process a second time, as a wide frame).

    Partitions carry equal traffic.  A worker keeps its own partitions' rows up to its
    share; what it cannot keep goes to the workers with room left, in proportion to it.

    >>> local_plan({"t:0": 1, "t:1": 0, "t:2": 1}, [0.5, 0.5])
    {'t:0': [0.25, 0.75], 't:1': [1.0, 0.0], 't:2': [0.25, 0.75]}
    """
    n, workers = len(homes), len(shares)
    if n == 0:
        return {}
    demand = [0.0] * workers
    for w in homes.values():
        demand[w] += 1.0 / n
    keep = [min(c, d) for c, d in zip(shares, demand, strict=True)]
    room = [c - k for c, k in zip(shares, keep, strict=True)]
    spare = sum(room)
    plan: dict[str, list[float]] = {}
    for key, home in homes.items():
        local = keep[home] / demand[home]
        row = [(1.0 - local) * r / spare if spare > 1e-12 else 0.0 for r in room]
        row[home] += local
        plan[key] = row
    return plan


__all__ = ["COSTS", "local_plan", "MAX_PLACED_PARTS", "cover_part", "fixed_loads", "free_shares", "reorder_key", "sink_worker", "siphash13", "source_part", "source_part_coordinates", "source_worker", "state_worker", "water_fill", "worker_keys"]
