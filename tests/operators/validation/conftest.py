from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from driftline.operators.batch import MicroBatch
from driftline.operators.decode import RawRecord, decode_batch

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)


def _event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid text event; ``overrides`` replace fields (value ``...`` deletes the field)."""
    base: dict[str, Any] = {
        "event_id": f"e{i}",
        "event_time": NOW_MS - 1000,
        "source": "reviews",
        "tenant": "acme",
        "user_id": f"u{i}",
        "text": f"the soup was fine {i}",
        "attributes": {},
    }
    for k, v in overrides.items():
        if v is ...:
            base.pop(k, None)
        else:
            base[k] = v
    return base


@pytest.fixture
def make_batch() -> Callable[[list[dict[str, Any] | bytes | None]], MicroBatch]:
    def build(items: list[dict[str, Any] | bytes | None]) -> MicroBatch:
        payloads = [orjson.dumps(x) if isinstance(x, dict) else x for x in items]
        records = [RawRecord(p, "events", 0, i, NOW_MS) for i, p in enumerate(payloads)]
        return decode_batch(records, now=NOW)

    return build


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def event() -> Callable[..., dict[str, Any]]:
    """``event(i, **overrides)``: a valid text event; an override of ``...`` deletes the field."""
    return _event
