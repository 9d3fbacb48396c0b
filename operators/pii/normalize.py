"""The detection view: what the recognizers read instead of the raw text.

Disguised PII (``ann\\u200b@example.com``, ``ann&#64;example.com``, ``ann%40example.com``,
fullwidth ``４１１１``, a card grouped with tabs or newlines) is found by scanning a
normalised copy of the text, the *view*, built like this:

1. every character goes through one lookup table (built once per process from
   :mod:`unicodedata`): control characters other than tab, new line and carriage return,
   format characters (``Cf``: zero-width, soft hyphen, bidi controls, tags) and combining
   marks are removed; other white space becomes a space (line and paragraph separators a
   new line); digits of every script become ASCII digits; every other character becomes its
   Unicode NFKC form (fullwidth ``＠`` is ``@``, ``①`` is ``1``);
2. HTML character references (``&#64;``, ``&#x40;``, ``&commat;``) and percent-escapes
   (``%40``, runs of them as UTF-8) are decoded, and step 1 runs again over the result;
3. a run of white space between two digits (tabs, new lines, several spaces) becomes one
   space, so ``4111\\t1111\\n1111  1111`` reads as a grouped card number.

Each character of the view remembers the span of the original text it came from
(``starts``/``ends``), so a finding in the view maps back to exactly the characters of the
disguised value.  Only texts that need it get a view: :data:`NEEDS_VIEW` (a Rust regex
Polars runs over the whole batch) flags them; all others are their own view.  Every step is
linear in the text: one table lookup per character (numpy), one pass of a regex without
nested repetition, and array compositions.

>>> v = build_view("mail ann\\u200b&#64;exa%6Dple.com, card ４１１１\\t1111")
>>> v.text
'mail ann@example.com, card 4111 1111'
>>> v.original_span(5, 20)
(5, 27)
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

KEEP, REPLACE, REMOVE, EXPAND = 0, 1, 2, 3


class BudgetExceeded(Exception):
    """Raised when one string would need more work than a record may take (more encoded
    references than the budget, a recognizer's candidate too costly to check); the masker
    then refuses the record (``pii_budget:too_many_candidates``) instead of holding the flow."""
_PLANES = (0, 1, 2, 3, 14)  # planes with assigned characters (4-13 are empty, 15-16 private use)
_MAX_CP = 0x110000


@dataclass(frozen=True)
class _Table:
    kind: np.ndarray  # uint8 per code point
    target: np.ndarray  # uint32: replacement code point (REPLACE), the code point itself otherwise
    expand: dict[int, str]  # code point -> multi-character NFKC form
    ranges: tuple[tuple[int, int], ...]  # code point ranges whose kind is not KEEP


@functools.cache
def _table() -> _Table:
    kind = np.zeros(_MAX_CP, dtype=np.uint8)
    target = np.arange(_MAX_CP, dtype=np.uint32)
    expand: dict[int, str] = {}
    for plane in _PLANES:
        for cp in range(plane << 16, (plane + 1) << 16):
            if 0xD800 <= cp < 0xE000:
                continue
            ch = chr(cp)
            cat = unicodedata.category(ch)
            if cat == "Cn":
                continue
            if cat in ("Cc", "Cf", "Mn", "Me"):
                if ch not in "\t\n\r":
                    kind[cp] = REMOVE
                continue
            if cat in ("Zl", "Zp"):
                kind[cp], target[cp] = REPLACE, 10
                continue
            if cat == "Zs" and cp != 32:
                kind[cp], target[cp] = REPLACE, 32
                continue
            if cat == "Nd" and not 48 <= cp <= 57:
                kind[cp], target[cp] = REPLACE, 48 + unicodedata.decimal(ch)
                continue
            if unicodedata.decomposition(ch):
                nf = unicodedata.normalize("NFKC", ch)
                nf = "".join(c for c in nf if unicodedata.category(c) not in ("Mn", "Me", "Cf"))
                if nf == ch:
                    continue
                if len(nf) == 1:
                    kind[cp], target[cp] = REPLACE, ord(nf)
                elif nf:
                    kind[cp] = EXPAND
                    expand[cp] = nf
                else:
                    kind[cp] = REMOVE
    # NFKC can produce a character the table itself changes (e.g. a digit of another script):
    # resolve single replacements to their final form.
    rep = np.flatnonzero(kind == REPLACE)
    second = target[rep]
    again = kind[second] == REPLACE
    target[rep[again]] = target[second[again]]
    changed = np.flatnonzero(kind != KEEP)
    breaks = np.flatnonzero(np.diff(changed) != 1)
    lo = np.concatenate(([0], breaks + 1))
    hi = np.concatenate((breaks, [len(changed) - 1]))
    ranges = tuple((int(changed[a]), int(changed[b])) for a, b in zip(lo, hi))
    return _Table(kind, target, expand, ranges)


def _class_item(cp: int) -> str:
    return f"\\x{{{cp:X}}}"


_ENTITY = r"&(?:#[0-9]{1,7};?|#[xX][0-9A-Fa-f]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)"
_PERCENT = r"(?:%[0-9A-Fa-f]{2})+"
_DIGIT_GAP = r"[0-9](?:[ \t\r\n\x0B\x0C]{2,}|[\t\r\n\x0B\x0C])[0-9]"


@functools.cache
def needs_view_regex() -> str:
    """Rust regex flagging texts whose view differs from the text (see the module docstring)."""
    items = "".join(_class_item(a) if a == b else f"{_class_item(a)}-{_class_item(b)}" for a, b in _table().ranges)
    return f"[{items}]|{_ENTITY}|%[0-9A-Fa-f]{{2}}|{_DIGIT_GAP}"


_DECODE_RE = re.compile(f"{_ENTITY}|{_PERCENT}")
_WS = np.array([9, 10, 11, 12, 13, 32], dtype=np.uint32)


@dataclass(frozen=True, slots=True)
class View:
    """A normalised text and, per view character, the original span ``[starts[i], ends[i])``."""

    text: str
    starts: np.ndarray | None = None  # None: the view is the text itself
    ends: np.ndarray | None = None

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters behind view characters ``[start, end)``."""
        if self.starts is None or self.ends is None:
            return start, end
        return int(self.starts[start]), int(self.ends[end - 1])


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _from_codepoints(cps: np.ndarray) -> str:
    return cps.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")


def _map_chars(text: str, starts: np.ndarray, ends: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Step 1 (the table) over ``text`` whose characters come from ``[starts, ends)``."""
    t = _table()
    cps = _codepoints(text)
    kinds = t.kind[cps]
    if not kinds.any():
        return text, starts, ends
    counts = np.ones(len(cps), dtype=np.int64)
    counts[kinds == REMOVE] = 0
    exp_pos = np.flatnonzero(kinds == EXPAND)
    for p in exp_pos.tolist():
        counts[p] = len(t.expand[int(cps[p])])
    src = np.repeat(np.arange(len(cps)), counts)
    out = t.target[cps][src]
    if len(exp_pos):
        offsets = np.cumsum(counts) - counts
        for p in exp_pos.tolist():
            out[offsets[p] : offsets[p] + counts[p]] = _codepoints(t.expand[int(cps[p])])
    return _from_codepoints(out), starts[src], ends[src]


def _decode_references(text: str, starts: np.ndarray, ends: np.ndarray, max_refs: int | None = None) -> tuple[str, np.ndarray, np.ndarray, bool]:
    """Step 2: HTML character references and percent-escapes decoded; every decoded
    character maps to the whole reference or escape run it came from.  More than
    ``max_refs`` of them raise :class:`BudgetExceeded` (checked before decoding any)."""
    if max_refs is not None and text.count("&") + text.count("%") > max_refs and len(_DECODE_RE.findall(text)) > max_refs:
        raise BudgetExceeded(f"more than {max_refs} encoded references")
    pieces: list[str] = []
    m_start: list[int] = []
    m_end: list[int] = []
    m_len: list[int] = []
    pos = 0
    for m in _DECODE_RE.finditer(text):
        raw = m.group()
        decoded = _decode_one(raw)
        if decoded is None:
            continue
        s, e = m.span()
        pieces.append(text[pos:s])
        pieces.append(decoded)
        m_start.append(s)
        m_end.append(e)
        m_len.append(len(decoded))
        pos = e
    if not m_start:
        return text, starts, ends, False
    pieces.append(text[pos:])
    n = len(text)
    ms, me = np.array(m_start), np.array(m_end)
    counts = np.ones(n, dtype=np.int64)
    inside = np.zeros(n + 1, dtype=np.int64)
    np.add.at(inside, ms + 1, 1)
    np.add.at(inside, me, -1)
    counts[np.cumsum(inside)[:n] > 0] = 0
    counts[ms] = m_len
    last = np.arange(n)
    last[ms] = me - 1
    src = np.repeat(np.arange(n), counts)
    return "".join(pieces), starts[src], ends[last[src]], True


@functools.lru_cache(maxsize=4096)
def _decode_one(raw: str) -> str | None:
    """The decoded form of one reference or escape run, or None to keep it as it is."""
    if raw[0] == "&":
        decoded = html.unescape(raw)
    else:
        try:
            decoded = bytes.fromhex(raw.replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if decoded == raw or not decoded else decoded


def _collapse_digit_gaps(text: str, starts: np.ndarray, ends: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Step 3: a white-space run between two digits other than one space becomes one space."""
    cps = _codepoints(text)
    n = len(cps)
    if n < 3:
        return text, starts, ends
    ws = np.isin(cps, _WS)
    digit = (cps >= 48) & (cps <= 57)
    edges = np.diff(np.concatenate(([0], ws.view(np.int8), [0])))
    run_start = np.flatnonzero(edges == 1)
    run_end = np.flatnonzero(edges == -1)  # exclusive
    inner = (run_start > 0) & (run_end < n)
    run_start, run_end = run_start[inner], run_end[inner]
    flanked = digit[run_start - 1] & digit[run_end]
    single_space = (run_end - run_start == 1) & (cps[run_start] == 32)
    pick = flanked & ~single_space
    if not pick.any():
        return text, starts, ends
    run_start, run_end = run_start[pick], run_end[pick]
    drop = np.zeros(n + 1, dtype=np.int64)  # every character of a run but its first
    np.add.at(drop, run_start + 1, 1)
    np.add.at(drop, run_end, -1)
    keep = np.cumsum(drop[:n]) == 0
    cps = cps.copy()
    cps[run_start] = 32
    ends = ends.copy()
    ends[run_start] = ends[run_end - 1]
    return _from_codepoints(cps[keep]), starts[keep], ends[keep]


def build_view(text: str, max_refs: int | None = None) -> View:
    """The detection view of ``text`` (see the module docstring); more than ``max_refs``
    encoded references raise :class:`BudgetExceeded`."""
    n = len(text)
    starts = np.arange(n, dtype=np.int64)
    ends = starts + 1
    v, s, e = _map_chars(text, starts, ends)
    v, s, e, decoded = _decode_references(v, s, e, max_refs)
    if decoded:
        v, s, e = _map_chars(v, s, e)
    v, s, e = _collapse_digit_gaps(v, s, e)
    if v == text:
        return View(text)
    return View(v, s, e)


__all__ = ["BudgetExceeded", "View", "build_view", "needs_view_regex"]
