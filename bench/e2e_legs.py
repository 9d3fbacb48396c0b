"""The comparison legs of bench/bench_e2e.py, each run as its own process.

    python bench/e2e_legs.py floor|loop|quix --bootstrap HOST:PORT --topic T --events N --out DIR --result FILE

- ``floor``: Kafka -> Parquet with no stages: orjson decode, columnar buffers, pyarrow zstd.
- ``loop``: a plain confluent-kafka consumer loop doing the seed documents' per-event work
  (:mod:`e2e_work`), no logging, no async.
- ``quix``: a Quix Streams application doing the same per-event work (``sdf.apply``) with a
  Quix batching sink writing Parquet; runs in the interpreter that has quixstreams.

Each leg writes ``{"events", "rows", "t_first", "t_end", "peak_rss_bytes"}`` to ``--result``:
throughput is ``events / (t_end - t_first)``, from the first record seen to the last
Parquet file written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_work import SeedWork  # noqa: E402


def _consumer(bootstrap: str, topic: str) -> Any:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}", "enable.auto.commit": "false", "enable.partition.eof": "true", "fetch.wait.max.ms": "50"})
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(parts)])
    return c, len(parts)


def _drain(bootstrap: str, topic: str, handle: Any) -> tuple[int, float]:
    """Feed every message value to ``handle`` until each partition hits its end; (events, first time)."""
    from confluent_kafka import KafkaError

    c, parts = _consumer(bootstrap, topic)
    eof: set[int] = set()
    events = 0
    t_first = 0.0
    while len(eof) < parts:
        for msg in c.consume(1000, 0.1):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                    continue
                raise RuntimeError(str(err))
            if not events:
                t_first = time.time()
            events += 1
            handle(msg.value())
    c.close()
    return events, t_first


def floor(args: argparse.Namespace) -> dict[str, Any]:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols: dict[str, list[Any]] = {c: [] for c in ("event_id", "event_time", "source", "tenant", "user_id", "text")}
    state = {"files": 0, "rows": 0}

    def flush() -> None:
        if cols["event_id"]:
            pq.write_table(pa.table(cols), out / f"part-{state['files']:05d}.parquet", compression="zstd")
            state["files"] += 1
            state["rows"] += len(cols["event_id"])
            for v in cols.values():
                v.clear()

    def handle(value: bytes | None) -> None:
        try:
            obj = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        for c, v in cols.items():
            x = obj.get(c)
            v.append(x if isinstance(x, str) else None)
        if len(cols["event_id"]) >= 50_000:
            flush()

    events, t_first = _drain(args.bootstrap, args.topic, handle)
    flush()
    return {"events": events, "rows": state["rows"], "t_first": t_first, "t_end": time.time()}


def loop(args: argparse.Namespace) -> dict[str, Any]:
    work = SeedWork(Path(args.out))
    events, t_first = _drain(args.bootstrap, args.topic, work.process)
    work.close()
    return {"events": events, "rows": work.rows_written, "rejected": work.rejected, "t_first": t_first, "t_end": time.time()}


def quix(args: argparse.Namespace) -> dict[str, Any]:
    """The Quix way: ``apply`` for the per-event work, Quix's own event-time tumbling
    windows (``group_by("source")`` then ``tumbling_window(...).agg(...)``, state in
    RocksDB) for the per-minute statistics, and batching sinks writing Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Mean, Sum
    from quixstreams.sinks import BatchingSink, SinkBatch

    out = Path(args.out)
    work = SeedWork(out, windows=False)
    seen = {"events": 0, "t_first": 0.0, "t_last": 0.0, "windows": 0}

    class ParquetRows(BatchingSink):
        """Rows of each checkpoint into the same columnar Parquet writer as the loop's."""

        def write(self, batch: SinkBatch) -> None:
            for item in batch:
                work.add(item.value)
            seen["t_last"] = time.time()

    class ParquetWindows(BatchingSink):
        def write(self, batch: SinkBatch) -> None:
            rows = [{"source": item.key, **item.value} for item in batch]
            if rows:
                pq.write_table(pa.Table.from_pylist(rows), out / f"windows-{seen['windows']:05d}.parquet", compression="zstd")
                seen["windows"] += 1
            seen["t_last"] = time.time()

    def process(value: bytes) -> Any:
        if not seen["events"]:
            seen["t_first"] = time.time()
        seen["events"] += 1
        return work.process_row(value)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=str(out / "_state"),
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="bytes", key_deserializer="bytes")
    rows = app.dataframe(topic).apply(process).filter(lambda row: row is not None)
    rows.sink(ParquetRows())
    stats = rows.set_timestamp(lambda value, key, ts, headers: value["event_time"]).group_by("source")
    stats = stats.tumbling_window(60_000, grace_ms=30_000).agg(
        events=Count(), mean_sentiment=Mean("sentiment"), mean_length=Mean("text_length"), pii_hits=Sum("pii_count")
    ).final()
    stats.sink(ParquetWindows())
    app.run(timeout=3.0)  # stops once no message arrived for 3 s; timing ends at the last sink write
    work.flush()
    return {"events": seen["events"], "rows": work.rows_written, "rejected": work.rejected, "t_first": seen["t_first"], "t_end": seen["t_last"]}


def _peak_rss() -> int:
    """VmHWM of this process (ru_maxrss would include the parent's memory before exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("leg", choices=("floor", "loop", "quix"))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    result = {"floor": floor, "loop": loop, "quix": quix}[args.leg](args)
    result["peak_rss_bytes"] = _peak_rss()
    Path(args.result).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
