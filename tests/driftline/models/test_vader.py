"""The batch VADER equals vaderSentiment's compound score, and no text can make it slow."""

from __future__ import annotations

import time

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from driftline.models.vader import SMALL_BATCH, VaderBatch, _but_quirk
from driftline.producer import SyntheticProducer

# The rules VADER applies, each exercised at least once: negation (words, "n't", "no",
# "never so", "without doubt"), boosters and dampeners (also in capitals and as bigrams),
# the contrastive "but" (with repeated values: the list.index quirk), "least", idioms,
# all-caps emphasis, ! and ? emphasis, emoticons and emoji, white space Python splits on.
EDGE_CASES = [
    "VADER is smart, handsome, and funny.",
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.",
    "At least it isn't a horrible book.",
    "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "Today only kinda sux! But I'll get by, lol",
    "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",
    "Not bad at all",
    "good good but good good",
    "great but great but great",
    "nice but okay, nice but good",
    "no good",
    "no no good",
    "No, I don't love it",
    "not so good",
    "never so good",
    "never this bad",
    "without doubt good",
    "without a doubt good",
    "the shit",
    "kiss of death is bad",
    "yeah right good",
    "bad ass movie",
    "it was sort of nice",
    "just enough good",
    "he is the bomb",
    "I am GOOD but you are BAD",
    "?? really??",
    "really??? good????",
    "wow!!!!!!! amazing",
    "",
    "   ",
    "!!!",
    "😁😁😁",
    "a😁b😁 c",
    "least good",
    "at least good",
    "very least good",
    "the least good thing",
    "kind of bad",
    "KIND OF BAD really",
    "\x1cgood\x1fbad\u00a0nice\u2003ugly\u3000fine",
    "GOOD",
    "GOOD bad",
    "EXTREMELY good and extremely BAD",
    "Ç'EST GÉNIAL but meh",
    "not sure it's great, but okay",
    "I can't stand it",
    "uh-uh good",
    "nope great",
    "she's not the best but not the worst",
    "<EMAIL:3f9a1c2b7d10> was great, thanks!",
    "**** **** **** 1111 was charged twice, terrible!",
    "I love it. I hate it. I LOVE it!",
    "lol :-( :'( <3",
    "The service was ok... but the food? Awful!!",
    # separators other than single inner spaces (the regex tokenizer, not the plain split)
    "good  bad",
    " leading good",
    "trailing bad ",
    "tab\tgood\nline bad",
    "x",
]


@pytest.fixture(scope="module")
def analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def test_equals_vader_sentiment_on_ten_thousand_texts(analyzer: SentimentIntensityAnalyzer) -> None:
    produced = [e.record["text"] for e in SyntheticProducer(5, pii_rate=0.3, negative_rate=0.5).events(10_000 - len(EDGE_CASES))]
    texts = produced + EDGE_CASES
    assert len(texts) == 10_000
    got = VaderBatch().compound(texts)
    expected = [analyzer.polarity_scores(t)["compound"] for t in texts]
    mismatches = [(t, g, e) for t, g, e in zip(texts, got, expected) if g != e]
    assert not mismatches, mismatches[:5]
    assert sum(1 for e in expected if e != 0) > 3_000  # not a table of neutral scores


def test_small_batches_and_nulls_score_like_one_batch(analyzer: SentimentIntensityAnalyzer) -> None:
    scorer = VaderBatch()
    whole = scorer.compound(EDGE_CASES)
    assert len(EDGE_CASES) > SMALL_BATCH  # the columnar pass
    assert [scorer.compound([t])[0] for t in EDGE_CASES] == whole  # vaderSentiment itself (or columnar for emoji)
    assert scorer.compound([None, "good"]) == [0.0, analyzer.polarity_scores("good")["compound"]]
    assert scorer.compound([]) == []


def test_but_quirk_matches_the_list_index_loop() -> None:
    def reference(sentiments: list[float], bi: int) -> list[float]:
        s = list(sentiments)
        for sentiment in s:  # vaderSentiment's loop, mutating while iterating
            si = s.index(sentiment)
            if si < bi:
                s.pop(si)
                s.insert(si, sentiment * 0.5)
            elif si > bi:
                s.pop(si)
                s.insert(si, sentiment * 1.5)
        return s

    cases = [[1.9, 0, 0.95, 0.95, -1.2, 2.85], [0.5, 0.25, 0, 0.125, 0.5], [-1.0, -0.5, 0, -1.5, -0.75, -1.0]]
    for full in cases:
        bi = full.index(0)
        positions = [p for p, x in enumerate(full) if x != 0]
        got = _but_quirk([full[p] for p in positions], positions, bi)
        ref = reference(full, bi)
        assert got == [ref[p] for p in positions]


def test_a_pathological_text_costs_little(analyzer: SentimentIntensityAnalyzer) -> None:
    """vaderSentiment took 19 s on 8,000 emoji (issue 12); the batch scorer is linear.

    The bound is generous (a loaded 2-core machine); the point is the order of magnitude.
    """
    scorer = VaderBatch()
    scorer.compound(["warm up"])
    for text in ("😁" * 8000, "good but bad " * 3000, "NOT very GOOD!!! " * 2000):
        started = time.perf_counter()
        score = scorer.compound([text])[0]
        assert time.perf_counter() - started < 2.0, text[:20]
        assert -1.0 <= score <= 1.0
    short = "😁" * 40
    assert scorer.compound([short]) == [analyzer.polarity_scores(short)["compound"]]
