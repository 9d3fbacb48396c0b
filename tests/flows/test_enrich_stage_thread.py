"""The enrich flow's stateless stages on the worker's helper thread (operators/ahead.py)
write the datasets and records of the stages on the worker thread."""

from __future__ import annotations

from pathlib import Path

import orjson
from bytewax.testing import run_main

from driftline.config import load_config
from driftline.flows.enrich import EnrichIO, build_enrich_flow
from driftline.producer import SyntheticProducer
from driftline.testing import InMemorySink, micro_batch_source, raw_batches
from driftline.testing.datasets import PROCESSING_TIME, dataset_differences, dataset_frame


def _records(sink: InMemorySink, *, json: bool) -> list[tuple[bytes, object]]:
    """(key, value) of every record, processing-time fields left out of JSON values."""
    out = []
    for batch in sink.items:
        for key, value, _headers in batch:
            doc = {k: v for k, v in orjson.loads(value).items() if k not in PROCESSING_TIME} if json else value
            out.append((key or b"", doc))
    return sorted(out, key=lambda kv: (kv[0], orjson.dumps(kv[1], option=orjson.OPT_SORT_KEYS) if json else kv[1]))


def test_the_stages_on_a_helper_thread_give_the_datasets_of_the_worker_thread(tmp_path: Path) -> None:
    events = list(SyntheticProducer(5, pii_rate=0.3, invalid_rate=0.05).events(3_000))
    batches = [b for p in range(3) for b in raw_batches([e.payload for e in events[p::3]], partition=p, batch_size=250)]
    records = {}
    for threaded in (True, False):
        root = tmp_path / ("thread" if threaded else "inline")
        cfg = load_config(None, env={"DRIFTLINE__SINKS__ROOT": str(root)})
        output, dead = InMemorySink(), InMemorySink()
        run_main(build_enrich_flow(cfg, io=EnrichIO(micro_batch_source(batches), dead, output), stage_thread=threaded))
        records[threaded] = _records(output, json=True) + _records(dead, json=False)
    assert dataset_differences(tmp_path / "thread", tmp_path / "inline") == {}
    enriched, rejected = dataset_frame(tmp_path / "thread", "enriched"), dataset_frame(tmp_path / "thread", "rejected")
    assert enriched is not None and rejected is not None and enriched.height + rejected.height == 3_000
    assert records[True] == records[False] and len(records[True]) == 3_000  # every row to the output or the dead-letter topic
