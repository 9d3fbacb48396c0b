"""Benchmark: driftline's PII masker against Microsoft Presidio on the same labelled corpus.

Builds the Faker corpus of ``bench/pii_corpus.py`` (several locales; PII of every
structured type and look-alike decoys), then, in the same run, masks it with

- driftline: ``PiiMasker.scan`` over micro-batches (default configuration);
- Presidio: ``AnalyzerEngine`` with its predefined recognizers on a blank spaCy
  pipeline (no NER model can be downloaded here) plus ``AnonymizerEngine``,

and prints documents per second (wall clock, and per CPU second: the speed target uses the
latter, which other work on a shared machine does not move), recall per entity type and kind (a value counts as
leaked when it still stands verbatim in the output) and the share of decoys left intact.

    .venv/bin/python bench/bench_pii.py                 # 20000 docs driftline, 1000 Presidio
    .venv/bin/python bench/bench_pii.py --docs 5000 --presidio-docs 500 --batch 1000

It also checks that pseudonym tokens are equal across two separate processes with the
same key and differ with another key.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pii_corpus import Doc, build_corpus  # noqa: E402

from driftline.config.privacy import PrivacyConfig  # noqa: E402
from driftline.operators.pii import PiiMasker  # noqa: E402

STRUCTURED = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "SECRET", "URL_CREDENTIALS")
ENTITIES = (*STRUCTURED, "PERSON")


def run_driftline(docs: list[Doc], batch: int) -> tuple[list[str], float, float]:
    masker = PiiMasker.from_config(PrivacyConfig(), key=b"bench-key-0123456789abcdef")
    texts = [d.text for d in docs]
    masker.mask_series(pl.Series(texts[:batch]))  # warm-up (regex compilation)
    out: list[str] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch):
        out.extend(masker.mask_series(pl.Series(texts[i : i + batch], dtype=pl.Utf8)).to_list())
    return out, time.perf_counter() - t0, time.process_time() - c0


def run_presidio(docs: list[Doc]) -> tuple[list[str], float, float]:
    import logging

    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_anonymizer import AnonymizerEngine

    import tldextract.tldextract

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    # Presidio's e-mail recognizer calls tldextract, which would try to download the public
    # suffix list; nothing may be downloaded here, so use the snapshot bundled with it.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())

    class BlankSpacyEngine(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    nlp = BlankSpacyEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    nlp.load()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    anonymizer = AnonymizerEngine()
    anonymizer.anonymize(text=docs[0].text, analyzer_results=analyzer.analyze(text=docs[0].text, language="en"))
    out: list[str] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for d in docs:
        results = analyzer.analyze(text=d.text, language="en")
        out.append(anonymizer.anonymize(text=d.text, analyzer_results=results).text)
    return out, time.perf_counter() - t0, time.process_time() - c0


def score(docs: list[Doc], outputs: list[str]) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """(found, total) per entity, per PII kind, and (intact, total) per decoy kind."""
    ent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    decoy: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for d, out in zip(docs, outputs):
        for entity, k, value in d.pii:
            hit = value not in out
            ent[entity][0] += hit
            ent[entity][1] += 1
            kind[k][0] += hit
            kind[k][1] += 1
        for k, value in d.decoys:
            intact = value in out
            decoy[k][0] += intact
            decoy[k][1] += 1
    return {k: tuple(v) for k, v in ent.items()}, {k: tuple(v) for k, v in kind.items()}, {k: tuple(v) for k, v in decoy.items()}  # type: ignore[misc]


_TOKEN_SNIPPET = """
import sys, polars as pl
from driftline.config.privacy import PrivacyConfig
from driftline.operators.pii import PiiMasker, load_pseudonym_key
m = PiiMasker.from_config(PrivacyConfig(), load_pseudonym_key(PrivacyConfig(), "production"))
print(m.mask_series(pl.Series(["write to ann.lee@example.com or call +1 415-555-2671"]))[0])
"""


def token_check() -> tuple[bool, bool]:
    def run(key: str) -> str:
        env = dict(os.environ, DRIFTLINE_PII_KEY=key)
        return subprocess.run([sys.executable, "-c", _TOKEN_SNIPPET], env=env, capture_output=True, text=True, check=True).stdout.strip()

    a, b, c = run("key-one-0123456789abcdef"), run("key-one-0123456789abcdef"), run("key-two-0123456789abcdef")
    return a == b, a != c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000, help="documents for driftline")
    ap.add_argument("--presidio-docs", type=int, default=1000, help="first N documents also run through Presidio (it is slow)")
    ap.add_argument("--batch", type=int, default=1000, help="micro-batch size for driftline")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-presidio", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of driftline (best is reported)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    docs = build_corpus(args.docs, args.seed)
    print(f"corpus: {len(docs)} docs, {sum(len(d.pii) for d in docs)} PII values, {sum(len(d.decoys) for d in docs)} decoys, mean {sum(len(d.text) for d in docs) / len(docs):.0f} chars (built in {time.perf_counter() - t0:.1f}s)")

    # best of --repeat runs: the machine is shared, the minimum is the least disturbed figure.
    # Wall time moves with the other work on the machine; CPU time (every thread of the
    # process: Polars' pool included) is the work done, and decides the speed target.
    dl_out, dl_s, dl_cpu = run_driftline(docs, args.batch)
    for _ in range(args.repeat - 1):
        _, s, c = run_driftline(docs, args.batch)
        dl_s, dl_cpu = min(dl_s, s), min(dl_cpu, c)
    results = {"driftline": score(docs, dl_out)}
    rates = {"driftline": len(docs) / dl_s}
    cpu_rates = {"driftline": len(docs) / dl_cpu}
    # driftline on exactly the Presidio subset too, for a like-for-like recall table
    sub = docs[: args.presidio_docs]
    if not args.no_presidio:
        pr_out, pr_s, pr_cpu = run_presidio(sub)
        if args.repeat > 1:  # same treatment as driftline: best of the runs
            _, s, c = run_presidio(sub)
            pr_s, pr_cpu = min(pr_s, s), min(pr_cpu, c)
        rates["presidio"] = len(sub) / pr_s
        cpu_rates["presidio"] = len(sub) / pr_cpu
        results["presidio"] = score(sub, pr_out)
        results["driftline (same subset)"] = score(sub, dl_out[: len(sub)])

    load = os.getloadavg()[0]
    print(f"\nthroughput (batch {args.batch}, {os.cpu_count()} cores, load average {load:.1f})")
    print(f"  {'':<24} {'docs/s (wall)':>14} {'docs per CPU s':>15}")
    for name, rate in rates.items():
        print(f"  {name:<24} {rate:>14.0f} {cpu_rates[name]:>15.0f}")
    if "presidio" in rates:
        print(f"  {'speed-up':<24} {rates['driftline'] / rates['presidio']:>13.1f}x {cpu_rates['driftline'] / cpu_rates['presidio']:>14.1f}x")

    names = list(results)
    print("\nrecall per entity type (found/total)")
    print("  " + f"{'entity':<18}" + "".join(f"{n:>26}" for n in names))
    for e in ENTITIES:
        cells = []
        for n in names:
            f, t = results[n][0].get(e, (0, 0))
            cells.append(f"{(f / t if t else float('nan')):.4f} ({f}/{t})")
        print("  " + f"{e:<18}" + "".join(f"{c:>26}" for c in cells))
    print("\nrecall per kind")
    kinds = sorted({k for n in names for k in results[n][1]})
    for k in kinds:
        cells = []
        for n in names:
            f, t = results[n][1].get(k, (0, 0))
            cells.append(f"{(f / t if t else float('nan')):.4f} ({f}/{t})")
        print("  " + f"{k:<22}" + "".join(f"{c:>26}" for c in cells))
    print("\ndecoys left intact")
    dkinds = sorted({k for n in names for k in results[n][2]})
    for k in dkinds + ["ALL"]:
        cells = []
        for n in names:
            if k == "ALL":
                f = sum(v[0] for v in results[n][2].values())
                t = sum(v[1] for v in results[n][2].values())
            else:
                f, t = results[n][2].get(k, (0, 0))
            cells.append(f"{(f / t if t else float('nan')):.4f} ({f}/{t})")
        print("  " + f"{k:<22}" + "".join(f"{c:>26}" for c in cells))

    same, differ = token_check()
    print(f"\npseudonym tokens: equal across two processes with the same key: {same}; differ with another key: {differ}")

    ent, kinds_found, d = results["driftline"]
    recall_ok = all(ent[e][0] / ent[e][1] >= 0.99 for e in STRUCTURED if e in ent)
    phone_kinds = {k: f / t for k, (f, t) in kinds_found.items() if k.startswith("phone")}
    phones_ok = all(r >= 0.99 for r in phone_kinds.values())
    names = ent.get("PERSON", (0, 0))
    names_ok = names[1] > 0 and names[0] / names[1] >= 0.8
    decoy_ok = sum(v[0] for v in d.values()) / sum(v[1] for v in d.values()) >= 0.98
    speed_ok = "presidio" not in rates or cpu_rates["driftline"] >= 30 * cpu_rates["presidio"]
    print(
        f"targets: recall>=0.99 every structured type: {recall_ok}; every phone kind >=0.99: {phones_ok}; "
        f"names >=0.8: {names_ok}; decoys intact>=0.98: {decoy_ok}; >=30x Presidio (CPU): {speed_ok}"
    )
    return 0 if recall_ok and phones_ok and names_ok and decoy_ok and speed_ok else 1


if __name__ == "__main__":
    sys.exit(main())
