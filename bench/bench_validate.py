"""Benchmark: records validated per second, batched (1,000 rows) versus one record at a time.

Run from the repository root:

    .venv/bin/python bench/bench_validate.py [--batches 20] [--singles 500]

The input is synthetic text events (about 12% of them break a schema, quality or
business rule), decoded once up front so only validation is timed.  Every path calls
the same public function, :func:`validate_batch`; "one at a time" calls it on 1-row
batches.  It prints one line per path and the speed-up of the batch path.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timezone

import orjson
import polars as pl

from driftline.config.validation import ValidationConfig
from driftline.operators.batch import MicroBatch
from driftline.operators.decode import RawRecord, decode_batch
from driftline.operators.validation import Validator, validate_batch

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)

CONFIG = {
    "quality": {
        "source": {"allowed_values": ["reviews", "support-desk", "chat"], "max_null_share": 0.05},
        "tenant": {"regex": "^[a-z0-9-]+$", "severity": "warn"},
        "user_id": {"max_length": 64},
        "attributes.rating": {"min": 1, "max": 5},
    },
    "business_rules": [
        {"name": "rating_mismatch", "expr": "attributes.rating == 5 and attributes.service_rating < 3", "severity": "warn"},
        {"name": "cheap_but_expensive", "expr": "attributes.price_level == 'cheap' and attributes.price > 20", "severity": "error"},
    ],
}


def make_events(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    words = "the soup was cold and the waiter forgot our order but the dessert made up for it".split()
    out = []
    for i in range(n):
        ev = {
            "event_id": f"ev-{seed}-{i}",
            "event_time": NOW_MS - rnd.randint(0, 600_000),
            "source": rnd.choice(["reviews", "support-desk", "chat"]),
            "tenant": rnd.choice(["acme", "globex", "initech"]),
            "user_id": f"user-{rnd.randint(1, 5000)}",
            "text": " ".join(rnd.choices(words, k=rnd.randint(5, 60))),
            "attributes": {
                "rating": str(rnd.randint(1, 5)),
                "service_rating": str(rnd.randint(1, 5)),
                "price_level": rnd.choice(["cheap", "moderate", "expensive"]),
                "price": str(rnd.randint(5, 60) if rnd.random() < 0.1 else rnd.randint(5, 20)),
            },
        }
        r = rnd.random()
        if r < 0.03:
            ev["text"] = "  "
        elif r < 0.05:
            ev["event_time"] = NOW_MS + 3_600_000
        elif r < 0.07:
            ev["source"] = "fax"
        elif r < 0.08:
            ev["tenant"] = "Big Corp"
        out.append(orjson.dumps(ev))
    return out


def decoded(payloads: list[bytes], offset: int) -> MicroBatch:
    return decode_batch([RawRecord(p, "events", 0, offset + i, NOW_MS) for i, p in enumerate(payloads)], now=NOW)


def run_batches(batches: list[MicroBatch], validator: Validator) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    valid = refused = 0
    for b in batches:
        out = validate_batch(b, validator, NOW)
        valid += out.valid.height
        refused += out.rejected.height
    return time.perf_counter() - t0, valid, refused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20, help="number of 1,000-row batches")
    ap.add_argument("--singles", type=int, default=500, help="records validated one at a time")
    ap.add_argument("--repeat", type=int, default=3, help="repeat each measurement, report the median")
    args = ap.parse_args()

    cfg = ValidationConfig.model_validate(CONFIG)
    polars_v = Validator.from_config(cfg, engine="polars")
    pandera_v = Validator.from_config(cfg, engine="pandera")
    payloads = make_events(args.batches * 1000)
    batches = [decoded(payloads[i : i + 1000], i) for i in range(0, len(payloads), 1000)]
    singles = [MicroBatch(valid=batches[0].valid.slice(i, 1), now=NOW) for i in range(min(args.singles, 1000))]
    run_batches(batches[:2], polars_v)  # warm-up (compiles regexes, caches the structure check)
    run_batches(batches[:2], pandera_v)
    run_batches(singles[:20], polars_v)

    def measure(items: list[MicroBatch], v: Validator) -> tuple[float, int, int]:
        runs = [run_batches(items, v) for _ in range(args.repeat)]
        secs = statistics.median(r[0] for r in runs)
        return secs, runs[0][1], runs[0][2]

    n_batch = sum(b.valid.height for b in batches)
    s_batch, ok, bad = measure(batches, polars_v)
    s_pandera, ok2, bad2 = measure(batches, pandera_v)
    s_single, _, _ = measure(singles, polars_v)
    rate_batch = n_batch / s_batch
    rate_pandera = n_batch / s_pandera
    rate_single = len(singles) / s_single

    # Cost of pandera's column/dtype check when it is not cached (once per distinct frame schema in the operator).
    structure = polars_v._structure
    frame = batches[0].valid
    t0 = time.perf_counter()
    for _ in range(50):
        structure.validate(frame.head(0), lazy=True)
    structure_ms = (time.perf_counter() - t0) / 50 * 1000

    print(f"input: {n_batch} records, {ok} valid / {bad} refused per pass (pandera engine: {ok2} / {bad2})")
    print(f"batch of 1,000, polars engine : {rate_batch:12,.0f} records/s  ({s_batch / len(batches) * 1000:.2f} ms per batch)")
    print(f"batch of 1,000, pandera engine: {rate_pandera:12,.0f} records/s  ({s_pandera / len(batches) * 1000:.2f} ms per batch)")
    print(f"one record at a time          : {rate_single:12,.0f} records/s  ({s_single / len(singles) * 1000:.3f} ms per record)")
    print(f"batch speed-up per record     : {rate_batch / rate_single:12.1f}x (target >= 10x)")
    print(f"pandera structure check       : {structure_ms:.2f} ms per call uncached (cached per frame schema in the operator)")
    print(f"polars {pl.__version__}, {len(batches)} batches, {len(singles)} singles, median of {args.repeat}")


if __name__ == "__main__":
    main()
