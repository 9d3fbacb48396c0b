"""The token estimate against a real offline tokenizer, and the exact counter itself."""

from __future__ import annotations

import base64
import gzip
from importlib import resources

import numpy as np
import polars as pl
import pytest

from driftline.config.features import FeaturesConfig, TextStatsConfig
from driftline.operators.features import FeatureEngine, compute_features
from driftline.operators.features.tokenizer import EstimateCounter, ExactCounter
from driftline.producer import SyntheticProducer

# bpe-openai loads its shipped rank files lazily with a deprecated importlib API.
pytestmark = pytest.mark.filterwarnings("ignore:open_binary is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def sample() -> list[str]:
    # A different seed from the one the weights were fitted on (seed=1).
    return [e.record["text"] for e in SyntheticProducer(seed=23, pii_rate=0.3).events(600)]


def test_estimate_error_against_cl100k(sample: list[str]) -> None:
    exact = ExactCounter("cl100k_base").count(pl.Series(sample)).to_numpy().astype(float)
    est = EstimateCounter(TextStatsConfig()).count(pl.Series(sample)).to_numpy().astype(float)
    ape = np.abs(est - exact) / exact
    mape, p95, bias = ape.mean(), np.quantile(ape, 0.95), (est.sum() - exact.sum()) / exact.sum()
    # Measured: MAPE ~0.10, p95 ~0.32, total bias < 1% (see docs/features.md).
    assert mape < 0.13, mape
    assert p95 < 0.40, p95
    assert abs(bias) < 0.03, bias


def test_exact_counter_matches_an_independent_bpe_implementation() -> None:
    """Cross-check the Rust counter with tiktoken's own BPE over the same shipped ranks."""
    tiktoken = pytest.importorskip("tiktoken")
    from bpe_openai import registry

    spec = registry.cl100k_base()
    enc = tiktoken.Encoding(name="cl100k_check", pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"], special_tokens=spec["special_tokens"])
    texts = ["Hello world, how are you?", "Ich möchte eine Erstattung für Bestellung A123456.", "   spaces\n\nand\ttabs   ", "emoji 🎉 and 12345678 digits", ""]
    got = ExactCounter("cl100k_base").count(pl.Series(texts)).to_list()
    assert got == [len(enc.encode_ordinary(t)) for t in texts]
    assert got[0] == 7


def test_rank_files_ship_with_the_wheel() -> None:
    with resources.files("bpe_openai.data").joinpath("cl100k_base.tiktoken.gz").open("rb") as raw, gzip.open(raw, "rt") as fh:
        token, rank = fh.readline().split()
    assert base64.b64decode(token) == b"!" and rank == "0"


def test_exact_tokenizer_in_the_engine_keeps_nulls() -> None:
    eng = FeatureEngine.from_config(FeaturesConfig(language={"enabled": False}, text_stats={"tokenizer": "cl100k_base"}))
    out = compute_features(pl.DataFrame({"text": ["Hello world, how are you?", None]}, schema={"text": pl.Utf8}), eng)
    assert out["f_tokens_est"].to_list() == [7, None]
    assert "exact" in next(s.description for s in eng.specs() if s.name == "f_tokens_est")
