"""split_map: the same results as one call, the second half on the shared side thread."""

from __future__ import annotations

import threading

import pytest

from driftline.config.features import LanguageConfig
from driftline.operators import parallel
from driftline.operators.features.language import Cld2Detector
from driftline.operators.parallel import split_map


def _tagged(items: list[int]) -> list[tuple[int, str]]:
    return [(x * x, threading.current_thread().name) for x in items]


def test_long_list_is_split_in_order_over_two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "_cpus", lambda: 2)
    out = split_map(_tagged, list(range(1001)), min_items=10)
    assert [v for v, _ in out] == [x * x for x in range(1001)]
    threads = [t for _, t in out]
    assert set(threads[:500]) == {threading.current_thread().name}
    assert all(t.startswith("driftline-side") for t in threads[500:])


@pytest.mark.parametrize(("cpus", "n"), [(1, 5000), (2, 9)])
def test_single_cpu_or_short_list_is_one_call(monkeypatch: pytest.MonkeyPatch, cpus: int, n: int) -> None:
    monkeypatch.setattr(parallel, "_cpus", lambda: cpus)
    out = split_map(_tagged, list(range(n)), min_items=10)
    assert {t for _, t in out} == {threading.current_thread().name}
    assert [v for v, _ in out] == [x * x for x in range(n)]


@pytest.mark.parametrize("bad", [3, 700])
def test_an_error_in_either_half_is_raised(monkeypatch: pytest.MonkeyPatch, bad: int) -> None:
    monkeypatch.setattr(parallel, "_cpus", lambda: 2)

    def fn(items: list[int]) -> list[int]:
        if bad in items:
            raise ValueError(f"item {bad}")
        return list(items)

    with pytest.raises(ValueError, match=f"item {bad}"):
        split_map(fn, list(range(1000)), min_items=10)
    assert split_map(fn, list(range(1000, 2000)), min_items=10) == list(range(1000, 2000))  # the side thread is free again


def test_language_detection_split_equals_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    det = Cld2Detector(LanguageConfig())
    texts = [
        "Ich habe den Staubsauger vor zwei Wochen bestellt und er ist nicht angekommen.",
        "The parcel arrived damaged and nobody answers my emails.",
        "La commande est arrivée en retard et le colis était ouvert.",
        "ok",
        "El pedido llegó tarde y la caja estaba rota por un lado.",
    ] * 120
    monkeypatch.setattr(parallel, "_cpus", lambda: 1)
    whole = det.detect(texts)
    monkeypatch.setattr(parallel, "_cpus", lambda: 2)
    assert len(texts) >= parallel.SPLIT_MIN_ITEMS
    assert det.detect(texts) == whole
    assert whole[0][:5] == ["de", "en", "fr", "und", "es"]
