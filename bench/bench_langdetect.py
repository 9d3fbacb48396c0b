"""Compare offline language detectors on the synthetic producer's languages.

Prints, per detector: accuracy on texts of >= 50 characters, accuracy on short
snippets (first 20-49 characters of a text), and microseconds per event on batches of
1,000 texts (single process; lingua's parallel API may use both cores).

    .venv/bin/python bench/bench_langdetect.py [--events 3000]

Candidates that ship their models in the wheel: pycld2 (CLD2), lingua in low- and
high-accuracy mode, and gcld3 (CLD3, from the cld3-py wheel) when installed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from driftline.config.features import LanguageConfig
from driftline.operators.features.language import build_detector
from driftline.producer import LANGUAGES, SyntheticProducer

Detect = Callable[[list[str]], list[str]]


def detectors() -> dict[str, Detect]:
    out: dict[str, Detect] = {}
    for name in ("cld2", "lingua_low", "lingua_high"):
        det = build_detector(LanguageConfig(detector=name, min_chars=0))
        out[name] = lambda texts, det=det: det.detect(texts)[0]
    try:
        import gcld3

        ident = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
        allowed = set(LANGUAGES)

        def cld3(texts: list[str]) -> list[str]:
            res = [ident.FindLanguage(text=t) for t in texts]
            return [r.language if r.language in allowed else "und" for r in res]

        out["gcld3"] = cld3
    except ImportError:
        print("gcld3 not installed (pip install cld3-py) - skipped")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=3000)
    args = ap.parse_args()
    events = list(SyntheticProducer(seed=5, pii_rate=0.2).events(args.events))
    long_texts = [(e.record["text"], e.language) for e in events if len(e.record["text"]) >= 50]
    short = [(e.record["text"][:35], e.language) for e in events]
    print(f"{len(long_texts)} texts >= 50 chars (mean {sum(len(t) for t, _ in long_texts) / len(long_texts):.0f} chars), {len(short)} 35-char snippets")
    print(f"{'detector':<12} {'acc>=50':>8} {'acc@35':>8} {'us/event':>9}")
    for name, detect in detectors().items():
        texts = [t for t, _ in long_texts]
        detect(texts[:50])  # warm-up (lazy model loading)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            got: list[str] = []
            for i in range(0, len(texts), 1000):
                got.extend(detect(texts[i : i + 1000]))
            best = min(best, time.perf_counter() - t0)
        acc = sum(g == lang for g, (_, lang) in zip(got, long_texts)) / len(long_texts)
        got_s = detect([t for t, _ in short])
        acc_s = sum(g == lang for g, (_, lang) in zip(got_s, short)) / len(short)
        print(f"{name:<12} {acc:8.2%} {acc_s:8.2%} {best / len(texts) * 1e6:9.1f}")


if __name__ == "__main__":
    main()
