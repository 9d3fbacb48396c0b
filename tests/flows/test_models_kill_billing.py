"""Billing across SIGKILLs on the real broker (issue 14.3, the remote-tier kill test).

``driftline run enrich`` runs as a subprocess against the loopback provider (a separate
process that outlives the kills: 30 ms per request, 10% failures: 429, 500, 503,
malformed answers, connection resets) and is killed with
SIGKILL (the whole process group) at random moments, some during start-up, then resumed
from the same recovery folder, until the topic is drained.  Every provider answer is
committed to the ledger the moment it arrives, so a kill re-bills at most the requests
in flight at that instant; with a provider that honours idempotency keys (the server's
``--idempotency``: same key, same stored answer, billed once) it re-bills nothing.

``DRIFTLINE_KILL_EVENTS`` (default 3,000) and ``DRIFTLINE_KILLS`` (default 4 per
variant) size the run; the figures of a longer run are in docs/models.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from driftline.producer import produce
from driftline.testing.kills import remote_kill_run

pytestmark = pytest.mark.kafka

EVENTS = int(os.environ.get("DRIFTLINE_KILL_EVENTS", "3000"))
KILLS = int(os.environ.get("DRIFTLINE_KILLS", "4"))


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain-provider", "provider-honours-keys"])
def test_kills_rebill_at_most_the_requests_in_flight(kafka_bootstrap: str, unique_topic: Any, tmp_path: Path, idempotent: bool) -> None:
    topic = unique_topic("kill-billing")
    produce(kafka_bootstrap, topic, EVENTS, seed=41, invalid_rate=0.0, pii_rate=0.0, progress=False)
    res = remote_kill_run(kafka_bootstrap, topic, tmp_path, events=EVENTS, kills=KILLS, idempotent=idempotent)
    out = pl.read_parquet(str(res.root / "enriched" / "**" / "*.parquet"))
    assert out.height == EVENTS and out["event_id"].n_unique() == EVENTS
    assert res.kills, "the flow finished before the first kill"
    primary = out.filter(pl.col("model_tier") == "primary")
    print(
        f"\n{'idempotent' if idempotent else 'plain'} provider, {EVENTS} events, {res.summary()}; "
        f"answer-to-kill gaps of answers not yet in the ledger (ms) {res.gaps_ms}; answered by primary {primary.height}; replayed from the ledger {out['model_replayed'].sum()}"
    )
    # nothing durable was billed again: every event answered twice was in flight at a kill
    # (an answer the provider finished after the kill instant is billed when it still reached
    # the socket of the dying process)
    assert res.answered_twice <= set().union(*res.not_durable, *res.open_at)
    assert len(res.answered_twice) <= sum(res.in_flight)
    # every event the provider answered is billed to its row
    assert set(primary.select(pl.format("{}:{}:{}", "src_topic", "src_partition", "src_offset")).to_series()) <= res.billed
    if idempotent:
        assert not res.answered_twice
        assert sum(res.in_flight) == 0 or res.replays > 0  # the requests cut off by a kill were answered from the provider's store
