"""VADER's compound score for a whole batch of texts at once, equal to vaderSentiment's.

vaderSentiment scores one text at a time in Python (about 35 µs for a 150-character
text) and some of its steps grow with the square of the text's length: every lexicon
word re-lowers the whole token list in the negation and idiom checks, and the
contrastive-"but" rule looks each score up with ``list.index``.  A text of 8,000 emoji
(each becomes its description, several words) took 19 s.

:class:`VaderBatch` computes the same compound score with the same lexicon and rules,
but columnar: the texts' tokens are exploded into one Polars frame, every rule reads
the neighbouring tokens with shifts (VADER looks at most three words back and two
ahead), and only the tokens that can carry a valence (lexicon words) go through the
rule chain.  Every step is linear in the number of tokens, so a text's cost is linear
in its length.  The model input is capped upstream at ``features.sanitize.max_chars``
characters (8,000 by default), which bounds the cost of any single record: an 8,000
emoji text is scored in milliseconds.

What must stay exactly as vaderSentiment does it (tests/driftline/models/test_vader.py
compares every score on 10,000 texts):

- tokens are ``str.split()`` runs with ASCII punctuation stripped from both ends unless
  two or fewer characters remain; emoji become their descriptions first, with
  vaderSentiment's spacing quirk (a space before, none after);
- sums run left to right (a cumulative sum), so floating-point results are identical;
- the "but" rule keeps its quirk: each score is scaled at the first position that holds
  an equal value (``list.index``), which is emulated exactly, in O(n log n);
- the compound score is rounded with Python's ``round(x, 4)``.

>>> VaderBatch().compound(["I love this, great job!", "The package was damaged.", ""])
[0.8851, -0.4404, 0.0]
"""

from __future__ import annotations

import heapq
import string
from functools import lru_cache

import numpy as np
import polars as pl
from vaderSentiment import vaderSentiment as vs

# Python's str.split() also splits on the information separators U+001C..U+001F, which
# are not Unicode White_Space (the regex engine's \s).
_TOKEN_RE = r"[^\s\x1c-\x1f]+"
# texts that are not "words separated by single spaces": empty, or a leading, trailing or
# double space, or another separator
_NOT_PLAIN_RE = r"^$|^ | $|  |[^\S ]|[\x1c-\x1f]"
# str.isupper(): an upper-case letter and no lower- or title-case one
_ISUPPER_RE = r"^[^\p{Lowercase}\p{Lt}]*\p{Uppercase}[^\p{Lowercase}\p{Lt}]*$"
_NEGATE = sorted(set(vs.NEGATE))
_SO_THIS = ["so", "this"]
# Batches this small, of texts this short without emoji, are scored by vaderSentiment
# itself (the same scores; its quadratic steps cannot bite below this length).
SMALL_BATCH = 32
SMALL_TEXT_CHARS = 1000
_OR_NOR = ["or", "nor"]


@lru_cache(maxsize=1)
def _analyzer() -> vs.SentimentIntensityAnalyzer:
    """vaderSentiment's analyzer: its lexicon and emoji table (loaded once per process)."""
    return vs.SentimentIntensityAnalyzer()


class VaderBatch:
    """Batch VADER compound scores (see the module docstring)."""

    def __init__(self) -> None:
        a = _analyzer()
        self.lexicon: dict[str, float] = {k: float(v) for k, v in a.lexicon.items()}
        self.boosters: dict[str, float] = dict(vs.BOOSTER_DICT)
        self.special: dict[str, float] = {k: float(v) for k, v in vs.SPECIAL_CASES.items()}
        # only single characters can match: vaderSentiment looks emoji up character by character
        self.emojis: dict[str, str] = {k: v for k, v in a.emojis.items() if len(k) == 1}
        self._emoji_chars = frozenset(self.emojis)
        # cheap prefilter: the emoji characters below U+2000 (© and ®), and anything above
        low = "".join(_class_escape(c) for c in sorted(self.emojis) if ord(c) < 0x2000)
        self._maybe_emoji_re = f"[{low}\u2000-\U0010ffff]"
        # the idiom and booster tables as columns, built once (not from the dicts on every batch)
        self._special_map = (pl.Series(list(self.special), dtype=pl.Utf8), pl.Series(list(self.special.values()), dtype=pl.Float64))
        self._booster_map = (pl.Series(list(self.boosters), dtype=pl.Utf8), pl.Series(list(self.boosters.values()), dtype=pl.Float64))
        words = sorted(set(self.lexicon) | set(self.boosters))
        self._vocab = pl.DataFrame(
            {"low": words, "lex": [self.lexicon.get(w) for w in words], "boost": [self.boosters.get(w) for w in words]},
            schema={"low": pl.Utf8, "lex": pl.Float64, "boost": pl.Float64},
        )

    # -- text preparation ---------------------------------------------------------------

    def _demojize(self, text: str) -> str:
        """vaderSentiment's emoji replacement, in linear time (a list join, not ``+=``)."""
        out: list[str] = []
        prev_space = True
        emojis = self.emojis
        for ch in text:
            desc = emojis.get(ch)
            if desc is not None:
                if not prev_space:
                    out.append(" ")
                out.append(desc)
                prev_space = False
            else:
                out.append(ch)
                prev_space = ch == " "
        return "".join(out)

    def _prepared(self, texts: pl.Series) -> pl.Series:
        texts = texts.cast(pl.Utf8).fill_null("")
        maybe = texts.str.contains(self._maybe_emoji_re)
        if maybe.any():
            idx = maybe.arg_true()
            candidates = texts.gather(idx).to_list()
            hits = [(i, t) for i, t in zip(idx.to_list(), candidates) if not self._emoji_chars.isdisjoint(t)]
            if hits:
                texts = texts.scatter([i for i, _ in hits], pl.Series([self._demojize(t) for _, t in hits], dtype=pl.Utf8))
        return texts

    # -- scoring ------------------------------------------------------------------------

    def compound(self, texts: pl.Series | list[str | None]) -> list[float]:
        """vaderSentiment's ``polarity_scores(t)["compound"]`` of every text (None counts as "")."""
        s = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.Utf8)
        n = s.len()
        if n == 0:
            return []
        if n <= SMALL_BATCH:  # a columnar pass has a fixed cost: short texts go through vaderSentiment itself
            small = s.fill_null("").to_list()
            if all(len(t) <= SMALL_TEXT_CHARS and self._emoji_chars.isdisjoint(t) for t in small):
                score = _analyzer().polarity_scores
                return [score(t)["compound"] for t in small]
        text = self._prepared(s)
        total = self._valence_sums(text)
        punct = pl.DataFrame({"t": text}).select(
            (pl.col("t").str.count_matches("!", literal=True).clip(upper_bound=4) * 0.292).alias("ep"),
            pl.col("t").str.count_matches("?", literal=True).cast(pl.Float64).alias("qm"),
        )
        # the same float operations as vaderSentiment's, on every text at once
        q = punct["qm"].to_numpy()
        amp = punct["ep"].to_numpy() + np.where(q > 1, np.where(q <= 3, q * 0.18, 0.96), 0.0)
        total = np.where(total > 0, total + amp, np.where(total < 0, total - amp, total))
        c = np.clip(total / np.sqrt(total * total + 15), -1.0, 1.0)
        c[np.isnan(total)] = 0.0  # no tokens at all
        return [round(x, 4) for x in c.tolist()]  # Python's rounding, not numpy's

    def _tokens(self, text: pl.Series) -> pl.DataFrame:
        """One row per token: text row, token count, position, stripped token in lower case,
        all-caps flag, lexicon valence and booster value (null when not one)."""
        frame = pl.DataFrame({"t": text}).with_row_index("row")
        # texts whose only separators are single inner spaces split on " " (a literal split
        # costs a third of the regex); the others (and empty texts) take the regex
        other = text.str.contains(_NOT_PLAIN_RE)
        if not other.any():
            lists = frame.select("row", pl.col("t").str.split(" ").alias("raw"))
        else:
            lists = pl.concat(
                [
                    frame.filter(~other).select("row", pl.col("t").str.split(" ").alias("raw")),
                    frame.filter(other).select("row", pl.col("t").str.extract_all(_TOKEN_RE).alias("raw")),
                ]
            ).sort("row")
        lists = lists.with_columns(pl.col("raw").list.len().alias("n"))
        lists = lists.filter(pl.col("n") > 0).with_columns(pl.int_ranges(0, pl.col("n")).alias("pos"))
        toks = lists.explode(["raw", "pos"])
        # a batch repeats its words: each distinct raw token is stripped, cased and looked up once
        raw = pl.col("raw")
        stripped = raw.str.strip_chars(string.punctuation)
        words = toks.select(raw.unique()).with_columns(pl.when(stripped.str.len_chars() <= 2).then(raw).otherwise(stripped).alias("tok"))
        words = words.select("raw", pl.col("tok").str.to_lowercase().alias("low"), pl.col("tok").str.contains(_ISUPPER_RE).alias("up"))
        words = words.join(self._vocab, on="low", how="left")
        return toks.join(words, on="raw", how="left", maintain_order="left").drop("raw")

    def _valence_sums(self, text: pl.Series) -> np.ndarray:
        """Per text: the sum of its token valences after every VADER rule (NaN: no tokens)."""
        sums = np.full(text.len(), np.nan)
        toks = self._tokens(text)
        if toks.height == 0:
            return sums
        # all-caps words against the text's word count (vaderSentiment's is_cap_diff)
        row = toks["row"].to_numpy()
        caps = np.bincount(row, weights=toks["up"].to_numpy(), minlength=text.len())
        count = np.zeros(text.len())
        count[row] = toks["n"].to_numpy()
        capdiff = (caps > 0) & (caps < count)
        # valence carriers: lexicon words that are not boosters and not the "kind" of "kind of"
        g = toks.with_row_index("g").filter(pl.col("lex").is_not_null() & pl.col("boost").is_null())
        words = self._neighbours(toks, g).filter(~((pl.col("low") == "kind") & (pl.col("pos") < pl.col("n") - 1) & (pl.col("n1") == "of")))
        if words.height:
            words = self._rules(words.with_columns(pl.Series("capdiff", capdiff[words["row"].to_numpy()])))
        sums[row] = 0.0  # texts with tokens but no valence: 0
        if words.height == 0:
            return sums
        scores = words.select("row", "pos", "v").filter(pl.col("v") != 0)  # zeros add nothing to a sum
        buts = toks.filter(pl.col("low") == "but").group_by("row").agg(pl.col("pos").min().alias("bi"))
        if buts.height:
            scores = self._but(scores, buts)
        # vaderSentiment sums left to right: a cumulative sum gives the same float
        last = scores.group_by("row", maintain_order=True).agg(pl.col("v").cum_sum().last())
        sums[last["row"].to_numpy()] = last["v"].to_numpy()
        return sums

    @staticmethod
    def _neighbours(toks: pl.DataFrame, g: pl.DataFrame) -> pl.DataFrame:
        """``g`` (rows of ``toks`` with their index ``g``) plus the three tokens before and
        two after: lower case (p1..p3, n1, n2), in-lexicon (pl1..pl3, nl1), booster value
        (pb1..pb3) and all caps (pu1..pu3).  Indexes past a text's ends read another text's
        tokens: every rule guards on the position."""
        last = toks.height - 1
        idx = g["g"].cast(pl.Int64)
        cols: list[pl.Series] = []
        for d in (1, 2, 3):
            at = (idx - d).clip(0, last)
            cols += [
                toks["low"].gather(at).alias(f"p{d}"),
                toks["lex"].gather(at).is_not_null().alias(f"pl{d}"),
                toks["boost"].gather(at).alias(f"pb{d}"),
                toks["up"].gather(at).alias(f"pu{d}"),
            ]
        for d in (1, 2):
            at = (idx + d).clip(0, last)
            cols.append(toks["low"].gather(at).alias(f"n{d}"))
        cols.append(toks["lex"].gather((idx + 1).clip(0, last)).is_not_null().alias("nl1"))
        return g.with_columns(cols)

    def _rules(self, w: pl.DataFrame) -> pl.DataFrame:
        """The valence ``v`` of each lexicon word after VADER's rules, in vaderSentiment's order.

        The string tests run as one Polars selection; the arithmetic chain runs in numpy
        (a few thousand words per batch, where one Polars call costs more than the math).
        """
        N, C = vs.N_SCALAR, vs.C_INCR
        col = pl.col

        def neg(c: str) -> pl.Expr:
            return col(c).is_in(_NEGATE) | col(c).str.contains("n't", literal=True)

        def sc(*parts: str) -> pl.Expr:
            return pl.concat_str([col(p) for p in parts], separator=" ").replace_strict(*self._special_map, default=None, return_dtype=pl.Float64)

        def bst(*parts: str) -> pl.Expr:
            return pl.concat_str([col(p) for p in parts], separator=" ").replace_strict(*self._booster_map, default=0.0, return_dtype=pl.Float64)

        f = w.select(
            col("pos").cast(pl.Int64).alias("i"),
            col("n").cast(pl.Int64),
            col("lex"),
            ((col("low") == "no") & col("nl1")).alias("no_here"),
            (col("p1") == "no").alias("p1_no"),
            (col("p2") == "no").alias("p2_no"),
            ((col("p3") == "no") & col("p1").is_in(_OR_NOR)).alias("p3_no_or"),
            (col("up") & col("capdiff")).alias("caps"),
            *[col(f"pl{d}") for d in (1, 2, 3)],
            *[col(f"pb{d}").fill_null(0.0) for d in (1, 2, 3)],
            *[(col(f"pu{d}") & col("capdiff")).alias(f"pu{d}") for d in (1, 2, 3)],
            *[neg(f"p{d}").alias(f"neg{d}") for d in (1, 2, 3)],
            ((col("p2") == "never") & col("p1").is_in(_SO_THIS)).alias("never2"),
            ((col("p2") == "without") & (col("p1") == "doubt")).alias("doubt2"),
            (((col("p3") == "never") & col("p2").is_in(_SO_THIS)) | col("p1").is_in(_SO_THIS)).alias("never3"),
            ((col("p3") == "without") & ((col("p2") == "doubt") | (col("p1") == "doubt"))).alias("doubt3"),
            pl.coalesce(sc("p1", "low"), sc("p2", "p1", "low"), sc("p2", "p1"), sc("p3", "p2", "p1"), sc("p3", "p2")).fill_null(float("nan")).alias("sc_before"),
            sc("low", "n1").fill_null(float("nan")).alias("sc_next"),
            sc("low", "n1", "n2").fill_null(float("nan")).alias("sc_next2"),
            bst("p3", "p2", "p1").alias("b321"),
            bst("p3", "p2").alias("b32"),
            bst("p2", "p1").alias("b21"),
            ((col("p1") == "least") & ~col("pl1")).alias("least1"),
            col("p2").is_in(["at", "very"]).alias("at_very2"),
        )
        a = {c: f[c].to_numpy() for c in f.columns}
        i, n, lex = a["i"], a["n"], a["lex"]
        v = lex.copy()
        v = np.where(a["no_here"] & (i != n - 1), 0.0, v)
        v = np.where(((i > 0) & a["p1_no"]) | ((i > 1) & a["p2_no"]) | ((i > 2) & a["p3_no_or"]), lex * N, v)
        v = np.where(a["caps"], np.where(v > 0, v + C, v - C), v)
        for k in (0, 1, 2):
            d = k + 1
            applies = (i > k) & ~a[f"pl{d}"]
            pb = a[f"pb{d}"]
            scalar = np.where(v < 0, pb * -1, pb)
            scalar = np.where(a[f"pu{d}"] & (pb != 0), np.where(v > 0, scalar + C, scalar - C), scalar)
            if k:
                scalar = np.where(scalar != 0, scalar * (0.95 if k == 1 else 0.9), scalar)
            v = np.where(applies, v + scalar, v)
            if k == 0:
                negated = np.where(a["neg1"], v * N, v)
            elif k == 1:
                negated = np.where(a["never2"], v * 1.25, np.where(a["doubt2"], v, np.where(a["neg2"], v * N, v)))
            else:
                negated = np.where(a["never3"], v * 1.25, np.where(a["doubt3"], v, np.where(a["neg3"], v * N, v)))
            v = np.where(applies, negated, v)
            if k == 2:  # special-case idioms and multi-word boosters, checked at the third word back
                idiom = np.where(np.isnan(a["sc_before"]), v, a["sc_before"])
                idiom = np.where((n - 1 > i) & ~np.isnan(a["sc_next"]), a["sc_next"], idiom)
                idiom = np.where((n - 1 > i + 1) & ~np.isnan(a["sc_next2"]), a["sc_next2"], idiom)
                idiom = idiom + a["b321"]
                idiom = idiom + a["b32"]
                idiom = idiom + a["b21"]
                v = np.where(applies, idiom, v)
        least = (i > 0) & a["least1"] & ((i == 1) | ~a["at_very2"])
        v = np.where(least, v * N, v)
        return w.with_columns(pl.Series("v", v, dtype=pl.Float64))

    @staticmethod
    def _but(scores: pl.DataFrame, buts: pl.DataFrame) -> pl.DataFrame:
        """vaderSentiment's contrastive "but" on the non-zero scores: before the text's first
        "but" x0.5, after x1.5, each applied at the first position holding an equal value
        (its ``list.index`` quirk)."""
        scores = scores.join(buts, on="row", how="left", maintain_order="left")
        nonzero = scores.filter(pl.col("bi").is_not_null())
        if nonzero.height == 0:
            return scores.drop("bi")
        fixed: list[tuple[int, int, float]] = []
        for (row,), part in nonzero.partition_by("row", as_dict=True, maintain_order=True).items():
            positions = part["pos"].to_list()
            values = _but_quirk(part["v"].to_list(), positions, int(part["bi"][0]))
            fixed.extend((row, p, x) for p, x in zip(positions, values))  # type: ignore[misc]
        patch = pl.DataFrame(fixed, schema={"row": scores.schema["row"], "pos": scores.schema["pos"], "nv": pl.Float64}, orient="row")
        scores = scores.join(patch, on=["row", "pos"], how="left", maintain_order="left")
        return scores.select("row", "pos", pl.coalesce("nv", "v").alias("v"))


def _but_quirk(values: list[float], positions: list[int], bi: int) -> list[float]:
    """vaderSentiment's ``_but_check`` loop on the non-zero scores of one text (zeros never
    match a non-zero value and stay zero), with a heap per value instead of ``list.index``.

    >>> _but_quirk([1.9, 0.95], [0, 2], 1)   # 1.9 -> 0.95 at position 0; then 0.95 is found there first
    [0.475, 0.95]
    """
    s = list(values)
    where: dict[float, list[int]] = {}
    for j, x in enumerate(s):
        where.setdefault(x, []).append(j)  # ascending already: a valid heap
    for k in range(len(s)):
        x = s[k]
        heap = where[x]
        while s[heap[0]] != x:  # lazily drop positions whose value changed
            heapq.heappop(heap)
        si = heap[0]
        if positions[si] == bi:
            continue
        new = x * 0.5 if positions[si] < bi else x * 1.5
        heapq.heappop(heap)
        s[si] = new
        heapq.heappush(where.setdefault(new, []), si)
    return s


def _class_escape(ch: str) -> str:
    return "\\" + ch if ch in "\\]^-[&~" else ch
