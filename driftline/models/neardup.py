"""Near-duplicate cache: an input similar enough to one already answered reuses its answer.

Offline and local: texts are normalised (lower case, ``n't`` -> ``not``, masked
entities ``<EMAIL:…>`` -> ``<email>``, punctuation and common English function and
filler words dropped: negations and numbers are kept) into words; the similarity of
two texts is the Jaccard index of their shingles (the words and the pairs of
consecutive words), so reordered sentences, changed punctuation or case, a greeting
and a masked value that differs still match, while a changed content word costs three
shingles.
Candidates are found with MinHash and locality-sensitive hashing (``num_perm``
permutations in ``bands`` bands, vectorised with numpy) and confirmed with the exact
Jaccard index of their shingle sets; the most similar one at or above ``threshold``
wins.

A guard refuses a hit whose texts differ in numbers (digits or number words) or in
negations: each negation word is compared together with the word it negates, so "not
late" / "late" and "not good, fast" / "good, not fast" never share an answer.

Entries are kept per namespace (task, prompt version, model) in memory, per process,
``max_entries`` of them (the oldest forgotten first); the answer itself is read from
the response cache by its key, so a near-duplicate hit is never fresher than the exact
cache allows (``ttl_s``).

>>> idx = NearDuplicateIndex(threshold=0.6)
>>> idx.add("ns", "The parcel came a week late and the box was damaged, order 1234.", "k1")
>>> idx.lookup("ns", "the parcel came a week late and the box was damaged -- ORDER 1234")
Match(key='k1', similarity=1.0, refused=False)
>>> idx.lookup("ns", "The parcel came a week late and the box was damaged, order 1235.").refused
True
>>> idx.lookup("ns", "The parcel came a week late and the box was not damaged, order 1234.").refused
True
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

import numpy as np

_MASKED = re.compile(r"<([A-Za-z_]+)(?::[^>\s]*)?>")
_WORD = re.compile(r"[^\W_]+|<[a-z_]+>")
_NT = re.compile(r"n['’]t\b")

#: Negation words (English and the other languages the producer writes).
NEGATIONS = frozenset(
    "not no never none nobody nothing neither nor cannot without nowhere hardly barely "
    "nicht kein keine keinen keiner nie niemals nichts ohne "  # de
    "ne pas jamais rien aucun aucune sans "  # fr
    "non nunca nada ninguno ninguna sin tampoco mai niente nessuno senza "  # es, it
    "não nao nem nenhum nenhuma sem "  # pt
    "niet geen nooit niets zonder".split()  # nl
)
#: Number words: a changed one is a changed number.
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion "
    "once twice thrice double triple half first second third fourth fifth dozen".split()
)


#: Function and filler words left out of the shingles (English; negations and numbers are never in it).
STOPWORDS = frozenset(
    "a an the and or but so to of in on at for from by with as is are was were be been being am do does did "
    "i me my we our you your it its this that these those he she they them his her their there here "
    "have has had will would could should can may might must shall just really very quite please "
    "hi hello hey dear thanks thank regards cheers ok okay oh well also still".split()
) - NEGATIONS - NUMBER_WORDS


def words(text: str) -> list[str]:
    """Normalised words of ``text``.

    >>> words("Hi, it isn't <EMAIL:a1b2> -- 3 DAYS late!")
    ['not', '<email>', '3', 'days', 'late']
    """
    t = _MASKED.sub(lambda m: f" <{m.group(1).lower()}> ", text)
    t = _NT.sub(" not", t.lower())
    return [w for w in _WORD.findall(t) if w not in STOPWORDS]


def shingles(ws: list[str]) -> set[str]:
    """The words and the pairs of consecutive words."""
    return set(ws) | {f"{a} {b}" for a, b in zip(ws, ws[1:])}


def guard_key(ws: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What two texts must share for a hit: their numbers and their negations with the word each negates."""
    numbers = sorted(w for w in ws if w in NUMBER_WORDS or any(c.isdigit() for c in w))
    negations = sorted(f"{w} {ws[i + 1] if i + 1 < len(ws) else ''}" for i, w in enumerate(ws) if w in NEGATIONS)
    return tuple(numbers), tuple(negations)


def _hashes(items: set[str]) -> np.ndarray:
    """Stable 64-bit hashes (the same in every process), sorted and unique."""
    return np.unique(np.fromiter((int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in items), dtype=np.uint64, count=len(items)))


def namespace(task: str, prompt_version: str, model: str) -> str:
    """Entries are only compared within a namespace: the same task, prompt and model."""
    return f"{task}\x00{prompt_version}\x00{model}"


@dataclass(frozen=True, slots=True)
class Match:
    """A lookup's outcome: the cached key and its similarity, or ``refused`` when the only
    candidates above the threshold failed the guard (``key`` is then None)."""

    key: str | None
    similarity: float
    refused: bool = False


@dataclass(slots=True)
class _Entry:
    namespace: str
    key: str
    hashes: np.ndarray
    guard: tuple[tuple[str, ...], tuple[str, ...]]
    bands: list[tuple[str, int, bytes]]


class NearDuplicateIndex:
    """MinHash/LSH index of texts already answered, per namespace (thread-safe)."""

    def __init__(self, threshold: float = 0.95, *, num_perm: int = 64, bands: int = 16, max_entries: int = 20_000, guard: bool = True, seed: int = 1) -> None:
        if num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
        self.threshold = threshold
        self.bands = bands
        self.rows = num_perm // bands
        self.max_entries = max_entries
        self.guard = guard
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._by_key: dict[tuple[str, str], int] = {}
        self._buckets: dict[tuple[str, int, bytes], set[int]] = defaultdict(set)
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _signature(self, hashes: np.ndarray) -> np.ndarray:
        if not hashes.size:
            return np.zeros(self._a.size, dtype=np.uint64)
        with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
            mixed = self._a[:, None] * hashes[None, :] + self._b[:, None]
        return (mixed >> np.uint64(32)).min(axis=1)

    def _band_keys(self, namespace: str, hashes: np.ndarray) -> list[tuple[str, int, bytes]]:
        sig = self._signature(hashes).reshape(self.bands, self.rows)
        return [(namespace, i, sig[i].tobytes()) for i in range(self.bands)]

    def add(self, namespace: str, text: str, key: str) -> None:
        """Remember that ``text`` was answered under the response-cache ``key``."""
        ws = words(text)
        if not ws:
            return
        hashes = _hashes(shingles(ws))
        entry = _Entry(namespace, key, hashes, guard_key(ws), self._band_keys(namespace, hashes))
        with self._lock:
            if (namespace, key) in self._by_key:
                return
            n = self._next
            self._next += 1
            self._entries[n] = entry
            self._by_key[(namespace, key)] = n
            for b in entry.bands:
                self._buckets[b].add(n)
            while len(self._entries) > self.max_entries:
                self._forget(next(iter(self._entries)))

    def _forget(self, n: int) -> None:
        entry = self._entries.pop(n)
        del self._by_key[(entry.namespace, entry.key)]
        for b in entry.bands:
            ids = self._buckets[b]
            ids.discard(n)
            if not ids:
                del self._buckets[b]

    def lookup(self, namespace: str, text: str) -> Match | None:
        """The most similar entry at or above the threshold that passes the guard (None if none is)."""
        ws = words(text)
        if not ws:
            return None
        hashes = _hashes(shingles(ws))
        bands = self._band_keys(namespace, hashes)
        with self._lock:
            ids = set().union(*(self._buckets.get(b, ()) for b in bands))
            candidates = [self._entries[n] for n in ids]
        scored = []
        for e in candidates:
            inter = np.intersect1d(hashes, e.hashes, assume_unique=True).size
            sim = inter / (hashes.size + e.hashes.size - inter)
            if sim >= self.threshold:
                scored.append((sim, e))
        if not scored:
            return None
        scored.sort(key=lambda p: -p[0])
        if not self.guard:
            return Match(scored[0][1].key, round(scored[0][0], 6))
        mine = guard_key(ws)
        for sim, e in scored:
            if e.guard == mine:
                return Match(e.key, round(sim, 6))
        return Match(None, round(scored[0][0], 6), refused=True)
