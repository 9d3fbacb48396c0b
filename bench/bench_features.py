"""Features per second on micro-batches of 1,000 events from the synthetic producer.

Prints microseconds per event (best of --repeat runs over --batches batches) for:
all configured features except language detection (the issue's target: < 30 us),
each kind alone, language detection alone, the exact tokenizer instead of the
estimate, and input sanitization for model calls.  The frames carry privacy-stage
columns (pii_* counts, classification) as the flows will.

    .venv/bin/python bench/bench_features.py [--batches 5] [--repeat 5] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import polars as pl

from driftline.config.features import FeaturesConfig
from driftline.operators.batch import ATTRIBUTES_DTYPE
from driftline.operators.features import FeatureEngine, compute_features
from driftline.operators.sanitize import Sanitizer, sanitize_frame
from driftline.producer import SyntheticProducer


def make_batches(n_batches: int, size: int) -> list[pl.DataFrame]:
    events = list(SyntheticProducer(seed=9, pii_rate=0.3).events(n_batches * size))
    df = pl.DataFrame(
        {
            "text": [e.record["text"] for e in events],
            "source": [e.record["source"] for e in events],
            "attributes": [[{"key": k, "value": v} for k, v in e.record["attributes"].items()] for e in events],
            "pii_email": [sum(t == "EMAIL" for t, _ in e.pii) for e in events],
            "pii_phone": [sum(t == "PHONE" for t, _ in e.pii) for e in events],
            "pii_total": [len(e.pii) for e in events],
            "classification": ["confidential" if e.pii else "internal" for e in events],
        },
        schema_overrides={"attributes": ATTRIBUTES_DTYPE},
    )
    return [df.slice(i * size, size) for i in range(n_batches)]


def timed(fn: Callable[[pl.DataFrame], object], batches: list[pl.DataFrame], repeat: int) -> float:
    fn(batches[0])  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        best = min(best, time.perf_counter() - t0)
    return best / sum(b.height for b in batches) * 1e6


def only(kind: str) -> FeaturesConfig:
    off = {
        "text_stats": {"enabled": False},
        "language": {"enabled": False},
        "sentiment": {"enabled": False},
        "pii": {"enabled": False},
        "injection": {"enabled": False},
        "categorical": [],
        "binning": [],
    }
    defaults = FeaturesConfig()
    keep = {"categorical": [c.model_dump() for c in defaults.categorical], "binning": [b.model_dump() for b in defaults.binning]}
    off[kind] = keep.get(kind, {"enabled": True})
    return FeaturesConfig(**off)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1000)
    args = ap.parse_args()
    batches = make_batches(args.batches, args.batch_size)
    mean_chars = sum(b["text"].str.len_chars().sum() for b in batches) / sum(b.height for b in batches)
    print(f"{args.batches} batches x {args.batch_size} events, mean text {mean_chars:.0f} chars, polars threads {pl.thread_pool_size()}")
    rows: list[tuple[str, FeaturesConfig]] = [
        ("all features except language (target < 30 us)", FeaturesConfig(language={"enabled": False})),
        ("all features incl. language (cld2)", FeaturesConfig()),
        ("all except language, exact cl100k tokenizer", FeaturesConfig(language={"enabled": False}, text_stats={"tokenizer": "cl100k_base"})),
    ]
    rows += [(f"  {k} alone", only(k)) for k in ("text_stats", "sentiment", "categorical", "binning", "pii", "injection", "language")]
    for label, cfg in rows:
        engine = FeatureEngine.from_config(cfg)
        us = timed(lambda b, e=engine: compute_features(b, e), batches, args.repeat)
        print(f"{label:<48} {us:8.2f} us/event  {1e6 / us:>10,.0f} events/s")
    sanitizer = Sanitizer.from_config(FeaturesConfig())
    us = timed(lambda b: sanitize_frame(b, sanitizer), batches, args.repeat)
    print(f"{'sanitize for model calls':<48} {us:8.2f} us/event  {1e6 / us:>10,.0f} events/s")


if __name__ == "__main__":
    main()
