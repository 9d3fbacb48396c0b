"""Near-duplicate cache benchmark (issue 19.3).  Prints its figures; not run by pytest.

1. 10,000 producer events (templated texts in 7 languages, 30 % with PII), masked by
   the privacy stage, through the model service against the loopback provider, with
   the exact cache alone and with the near-duplicate cache on: requests sent, exact
   hits, near-duplicate hits, guard refusals, and two false-hit measures for the
   near-duplicate hits: the texts differ beyond sentence order, case, punctuation and
   masked values (strict), and the reused label differs from the provider's own answer
   for the text.
2. The labelled pairs (``driftline.testing.paraphrases``, ``eval`` family, 1,000 pairs:
   paraphrases vs. negation, number, antonym and content-word changes): paraphrase hit
   rate and false-hit rate per threshold, with and without the guard.

    .venv/bin/python bench/bench_neardup.py [--events 10000]
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter

import polars as pl

from driftline.config import load_config
from driftline.config.models import ModelsConfig, NearDuplicateConfig
from driftline.models import ModelService
from driftline.models.cache import cache_key
from driftline.models.neardup import NearDuplicateIndex
from driftline.operators.pii import PiiMasker, load_pseudonym_key
from driftline.producer import SyntheticProducer
from driftline.testing.openai_server import Behaviour, OpenAITestServer, _answer
from driftline.testing.paraphrases import labelled_pairs

_MASK = re.compile(r"<([A-Z_]+)(?::[^>\s]*)?>")


def _sentences(text: str) -> list[str]:
    """Sorted sentences, lower case, masked values and punctuation dropped: what 'the same text' means here."""
    t = _MASK.sub(r"<\1>", text).lower()
    return sorted(re.sub(r"[^\w<> ]", "", s).strip() for s in re.split(r"[.!?]+", t) if s.strip())


def _provider_label(text: str) -> str:
    return str(pl.Series([_answer([{"role": "system", "content": "sentiment"}, {"role": "user", "content": f"Text:\n{text}"}])]).str.json_path_match("$.label")[0])


def _texts(n: int) -> list[str]:
    cfg = load_config(None, env={})
    masker = PiiMasker.from_config(cfg.privacy, load_pseudonym_key(cfg.privacy, cfg.mode))
    raw = [e.record["text"] for e in SyntheticProducer(5, pii_rate=0.3).events(n)]
    return masker.mask_series(pl.Series(raw)).to_list()


def _run(texts: list[str], near: bool) -> dict[str, object]:
    with OpenAITestServer(Behaviour()) as srv:
        cfg = ModelsConfig.model_validate(
            {
                "chain": ["primary", "rules"],
                "backends": {"primary": {"kind": "openai", "model": "m", "base_url": srv.base_url, "max_in_flight": 16}, "rules": {"kind": "rules"}},
                "ledger": {"enabled": False},
                "cache": {"near_duplicate": {"enabled": near}},
            }
        )
        svc = ModelService(cfg)
        start = time.perf_counter()
        outs = [svc.process(pl.DataFrame({"text": texts[s : s + 64], "event_id": [f"e{i}" for i in range(s, min(s + 64, len(texts)))]})).results for s in range(0, len(texts), 64)]
        took = time.perf_counter() - start
        svc.close()
        requests = len(srv.log)
    out = pl.concat(outs)
    own = [cache_key("sentiment", "v1", "m", t) for t in texts]
    by_key = dict(zip(own, texts))
    keys, labels = out["model_cache_key"].to_list(), out["model_label"].to_list()
    near_hits = [(i, k) for i, k in enumerate(keys) if k is not None and k != own[i]]
    strict = sum(_sentences(texts[i]) != _sentences(by_key[k]) for i, k in near_hits)
    wrong = sum(labels[i] != _provider_label(texts[i]) for i, _ in near_hits)
    return {
        "requests": requests,
        "exact": sum(1 for i, k in enumerate(keys) if k is not None and k == own[i]),
        "near": len(near_hits),
        "strict_false": strict,
        "wrong_label": wrong,
        "seconds": took,
        "examples": [(by_key[k], texts[i]) for i, k in near_hits[:3]],
    }


def bench_events(n: int) -> None:
    texts = _texts(n)
    print(f"{n} producer events, masked, {len(set(texts))} distinct texts:")
    for near in (False, True):
        r = _run(texts, near)
        label = "exact + near-duplicate cache" if near else "exact cache only            "
        print(
            f"  {label}: {r['requests']:5d} requests, exact hits {r['exact']:5d} ({r['exact'] / n:.1%}), near-duplicate hits {r['near']:5d} ({r['near'] / n:.1%}), "  # type: ignore[operator]
            f"false hits: texts differ beyond order/case/punctuation/masked values {r['strict_false']}, label differs from the provider's {r['wrong_label']}; {r['seconds']:.1f}s"
        )
        for a, b in r["examples"]:  # type: ignore[attr-defined]
            print(f"      {a[:90]!r}\n   ~= {b[:90]!r}")


def bench_pairs() -> None:
    pairs = labelled_pairs("eval", 1000, seed=7)
    same = sum(p.same for p in pairs)
    print(f"labelled pairs (eval family, threshold chosen on the tune family): {same} paraphrases, {len(pairs) - same} meaning changes")
    for threshold in (0.85, 0.9, 0.95):
        for guard in (True, False):
            cfg = NearDuplicateConfig(threshold=threshold, guard=guard)
            hits: Counter[bool] = Counter()
            false: Counter[str] = Counter()
            for p in pairs:
                idx = NearDuplicateIndex(cfg.threshold, num_perm=cfg.num_perm, bands=cfg.bands, guard=cfg.guard)
                idx.add("ns", p.a, "k")
                m = idx.lookup("ns", p.b)
                if m is not None and m.key == "k":
                    hits[p.same] += 1
                    if not p.same:
                        false[p.change.split("+")[0]] += 1
            print(
                f"  threshold {threshold:.2f} guard {'on ' if guard else 'off'}: paraphrase hit rate {hits[True] / same:6.1%}, "
                f"false-hit rate {hits[False] / (len(pairs) - same):6.2%} {dict(false)}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10000)
    a = ap.parse_args()
    bench_pairs()
    bench_events(a.events)


if __name__ == "__main__":
    main()
