"""Backfill on the real broker: ``driftline run enrich --from-time/--to-time`` over a topic
whose records carry their event time as Kafka timestamp writes exactly the rows of that
hour, exactly once (a second run writes nothing); offset bounds likewise."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml
from confluent_kafka import Producer

from driftline.cli import main
from driftline.kafka_io import ensure_topics
from driftline.producer import SyntheticProducer
from driftline.sinks.parquet import open_store
from driftline.sinks.parquet.manifest import live_files

pytestmark = pytest.mark.kafka

EVENTS = 900
SPACING_S = 12.0  # 900 events over 3 hours


def committed(root: Path, dataset: str) -> pl.DataFrame:
    store = open_store(str(root))
    files = [store.uri(p) for p in live_files(store, dataset)]
    return pl.read_parquet(files) if files else pl.DataFrame()


@pytest.fixture(scope="module")
def stamped_topic(kafka_bootstrap: str) -> tuple[str, datetime, list]:
    """Synthetic events (5% malformed) whose Kafka timestamp is their event time."""
    import uuid

    topic = f"backfill-{uuid.uuid4().hex[:8]}"
    start = (datetime.now(timezone.utc) - timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
    ensure_topics(kafka_bootstrap, [topic], partitions=3)
    gen = SyntheticProducer(17, invalid_rate=0.05, pii_rate=0.1, start_time=start, spacing_seconds=SPACING_S)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    events = list(gen.events(EVENTS))
    for i, ev in enumerate(events):
        ts = start + timedelta(seconds=SPACING_S * i)
        producer.produce(topic, value=ev.payload, key=ev.key, timestamp=int(ts.timestamp() * 1000))
    assert producer.flush(60) == 0
    return topic, start, events


def config(tmp: Path, bootstrap: str, topic: str, root: Path) -> Path:
    f = tmp / f"cfg-{root.name}.yaml"
    f.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"}, "sinks": {"root": str(root)}}))
    return f


def test_backfill_of_one_event_time_hour_writes_exactly_that_hour(stamped_topic, kafka_bootstrap: str, tmp_path: Path, capsys) -> None:
    topic, start, events = stamped_topic
    lo, hi = start + timedelta(hours=1), start + timedelta(hours=2)
    in_range = [(i, ev) for i, ev in enumerate(events) if lo <= start + timedelta(seconds=SPACING_S * i) < hi]
    assert len(in_range) == 300
    root = tmp_path / "out"
    cfg = config(tmp_path, kafka_bootstrap, topic, root)
    argv = ["--config", str(cfg), "run", "enrich", "--from-time", lo.isoformat(), "--to-time", hi.isoformat(), "--recovery-dir", str(tmp_path / "rec1"), "--log-level", "WARNING"]
    assert main(argv) == 0
    enriched, rejected = committed(root, "enriched"), committed(root, "rejected")
    valid_ids = {ev.record["event_id"] for _i, ev in in_range if not ev.defect}
    assert set(enriched["event_id"].to_list()) == valid_ids and enriched.height == len(valid_ids)
    assert enriched["event_time"].min() >= lo and enriched["event_time"].max() < hi
    assert rejected.height == sum(1 for _i, ev in in_range if ev.defect) > 0
    assert enriched.height + rejected.height == 300
    # the same backfill again (fresh recovery folder): nothing is written twice
    capsys.readouterr()
    assert main(argv[:-4] + ["--recovery-dir", str(tmp_path / "rec2"), "--log-level", "WARNING"]) == 0
    assert committed(root, "enriched").height == enriched.height and committed(root, "rejected").height == rejected.height
    assert main(["verify", "--root", str(root)]) == 0


def test_offset_bounds_and_bad_arguments(stamped_topic, kafka_bootstrap: str, tmp_path: Path, capsys) -> None:
    topic, _start, _events = stamped_topic
    root = tmp_path / "out"
    cfg = config(tmp_path, kafka_bootstrap, topic, root)
    assert main(["--config", str(cfg), "run", "enrich", "--from-offset", "10", "--to-offset", "30", "--log-level", "WARNING"]) == 0
    assert "were never committed" in capsys.readouterr().err  # offsets 0..9 of each partition: the gap is named
    rows = pl.concat([committed(root, "enriched").select("src_partition", "src_offset"), committed(root, "rejected").select("src_partition", "src_offset")])
    assert rows.height == 3 * 20
    assert rows.group_by("src_partition").agg(pl.col("src_offset").min().alias("lo"), pl.col("src_offset").max().alias("hi"))["lo"].to_list() == [10] * 3
    assert rows["src_offset"].max() == 29
    assert main(["--config", str(cfg), "run", "enrich", "--from-time", "2h", "--from-offset", "3"]) == 2
    assert main(["--config", str(cfg), "run", "monitor", "--from-offset", "3"]) == 2
    assert main(["--config", str(cfg), "run", "enrich", "--from-time", "1h", "--to-time", "2h"]) == 2
