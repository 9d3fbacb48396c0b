"""Near-duplicate cache (issue 19.3): false hits on a labelled set of paraphrases and
meaning changes (negations, numbers, antonyms, content words) stay at or below 0.5 %;
a hit in the service records its similarity and the cached key; the guard holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

from driftline.config.models import ModelsConfig, NearDuplicateConfig
from driftline.models import ModelService
from driftline.models.cache import cache_key
from driftline.models.neardup import NearDuplicateIndex
from driftline.testing.openai_server import Behaviour, OpenAITestServer
from driftline.testing.paraphrases import MEANING_CHANGES, labelled_pairs


def _rates(pairs: list, cfg: NearDuplicateConfig, guard: bool = True) -> tuple[float, float, Counter[str]]:
    """Share of paraphrases that hit, share of meaning changes that hit, and the false hits by kind."""
    hits: Counter[bool] = Counter()
    total: Counter[bool] = Counter()
    false: Counter[str] = Counter()
    for p in pairs:
        idx = NearDuplicateIndex(cfg.threshold, num_perm=cfg.num_perm, bands=cfg.bands, guard=guard)
        idx.add("ns", p.a, "k")
        m = idx.lookup("ns", p.b)
        hit = m is not None and m.key == "k"
        total[p.same] += 1
        hits[p.same] += hit
        if hit and not p.same:
            false[p.change.split("+")[0]] += 1
    return hits[True] / total[True], hits[False] / total[False], false


def test_false_hits_on_the_labelled_set_stay_below_half_a_percent() -> None:
    """The default threshold was chosen on the ``tune`` family; this reports the ``eval``
    family, whose templates, greetings and fillers differ."""
    pairs = labelled_pairs("eval", 1000, seed=7)
    changes = [p for p in pairs if not p.same]
    assert len(pairs) >= 500 and len(changes) >= 300
    assert {p.change.split("+")[0] for p in changes} == set(MEANING_CHANGES)
    cfg = NearDuplicateConfig()
    hit, false_hit, false = _rates(pairs, cfg)
    _, unguarded_false, unguarded = _rates(pairs, cfg, guard=False)
    low_hit, low_false, low = _rates(pairs, NearDuplicateConfig(threshold=0.9))
    _, low_unguarded_false, low_unguarded = _rates(pairs, NearDuplicateConfig(threshold=0.9), guard=False)
    print(
        f"\nlabelled pairs (eval family): {len(pairs) - len(changes)} paraphrases, {len(changes)} meaning changes "
        f"{dict(Counter(p.change.split('+')[0] for p in changes))}"
        f"\n  threshold {cfg.threshold} with guard: paraphrase hit rate {hit:.1%}, false-hit rate {false_hit:.2%} {dict(false)}"
        f"\n  threshold {cfg.threshold} without guard: false-hit rate {unguarded_false:.2%} {dict(unguarded)}"
        f"\n  threshold 0.9 with guard: paraphrase hit rate {low_hit:.1%}, false-hit rate {low_false:.2%} {dict(low)}"
        f"\n  threshold 0.9 without guard: false-hit rate {low_unguarded_false:.2%} {dict(low_unguarded)}"
    )
    assert false_hit <= 0.005
    assert hit >= 0.5
    assert false.get("negation", 0) == 0 and false.get("number", 0) == 0


def test_the_guard_refuses_negations_and_numbers_even_at_a_low_threshold() -> None:
    idx = NearDuplicateIndex(0.5)
    idx.add("ns", "The delivery of order 1234 was late and the box was damaged.", "k")
    assert idx.lookup("ns", "the delivery of order 1234 was late, and the box was damaged!").key == "k"
    refused = 0
    for changed in (
        "The delivery of order 1234 was not late and the box was damaged.",
        "The delivery of order 1234 wasn't late and the box was damaged.",
        "The delivery of order 1235 was late and the box was damaged.",
        "The delivery of order 1234 was late and the box was not damaged.",
    ):
        m = idx.lookup("ns", changed)
        assert m is None or m.key is None, changed  # never a hit
        refused += m is not None and m.refused
    assert refused >= 3  # found similar enough, refused by the guard


def test_service_reuses_a_near_duplicates_answer_and_records_it(tmp_path: Path) -> None:
    with OpenAITestServer(Behaviour()) as srv:
        cfg = ModelsConfig.model_validate(
            {
                "chain": ["primary", "rules"],
                "backends": {"primary": {"kind": "openai", "model": "m", "base_url": srv.base_url}, "rules": {"kind": "rules"}},
                "ledger": {"path": str(tmp_path / "l.sqlite")},
                "cache": {"near_duplicate": {"enabled": True}},
            }
        )
        svc = ModelService(cfg)
        original = "Hi, the new kettle works great and support was helpful."
        first = svc.process(pl.DataFrame({"text": [original], "event_id": ["a"]})).results
        texts = [
            "the new kettle works great and support was helpful!!",  # paraphrase: reused
            "Hi team, the new kettle works great and support was not helpful.",  # negation: sent
            "Hi team, the new kettle works great and support was helpful for 2 days.",  # a number added: sent
        ]
        out = svc.process(pl.DataFrame({"text": texts, "event_id": ["b", "c", "d"]})).results
        svc.close()
        sent = len(srv.log)
    assert first["model_cached"][0] is False and first["model_cache_key"][0] is None  # sent, not a hit
    rows = out.select("model_cached", "model_cache_similarity", "model_cache_key", "model_cost_usd").rows()
    # the reused answer is the original's: recorded with its similarity and its cache key
    assert rows[0][0] is True and rows[0][1] >= 0.9 and rows[0][3] == 0.0
    assert rows[0][2] == cache_key("sentiment", "v1", "m", original)
    assert [r[0] for r in rows[1:]] == [False, False] and [r[1] for r in rows[1:]] == [None, None]
    assert sent == 3  # the first text, the negation and the number change
