"""``driftline dead-letters summary|replay``: look at refused records and send them back.

``replay`` re-produces selected dead letters (their ORIGINAL key and bytes) to a topic,
usually the input topic once the producing team fixed its side, with lineage headers:

- ``driftline.replay.id``: this run's id (one UUID per run);
- ``driftline.replay.dlq``: the dead letter's own coordinates ``topic+partition+offset``;
- ``driftline.replay.src``: the original record's coordinates (from the dead letter);
- ``driftline.replay.reason_codes``: why it was refused (JSON list).

**Idempotent**: running it twice sends nothing twice.  Each run (1) initialises a
transactional producer whose ``transactional.id`` is stable per dead-letter topic and
target, which aborts a transaction a crashed run left open and fences a concurrent run;
(2) then reads the target's ``driftline.replay.dlq`` headers with
``isolation.level=read_committed`` from the time of the oldest selected dead letter
(a replay can only have happened after its dead letter was written, so older data is
never scanned); (3) produces only the dead letters not found there, in transactions of
``--batch`` messages.  A crash loses at most the open transaction, which is aborted and
not visible to read_committed readers; the next run sends exactly what is missing.  The
target topic itself is the replay log: nothing else to keep, back up or lose.

    driftline dead-letters summary
    driftline dead-letters replay --reason schema.missing_field.source --since 2026-03-01T00:00Z --to events
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.config import load_config
from driftline.progress import bar
from driftline.timeargs import parse_instant

NAME = "dead-letters"
HELP = "summarize the dead-letter topic, or replay selected dead letters (original bytes, lineage headers, idempotent)"

CLOCK_SKEW_MS = 3_600_000  # the scan of the target starts this much before the oldest dead letter (hosts' clocks differ)
H_ID, H_DLQ, H_SRC, H_REASONS = "driftline.replay.id", "driftline.replay.dlq", "driftline.replay.src", "driftline.replay.reason_codes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in (("summary", "count dead letters by stage and reason code"), ("replay", "re-produce selected dead letters to --to TOPIC, once")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--from", dest="source", default=None, help="dead-letter topic (default: kafka.dead_letter_topic)")
        p.add_argument("--reason", action="append", default=None, help="only dead letters with this reason code (repeatable; shell patterns such as 'schema.*' allowed)")
        p.add_argument("--stage", action="append", default=None, help="only dead letters refused at this stage (decode, validate, ...)")
        p.add_argument("--since", type=parse_instant, default=None, help="only dead letters written at or after this instant (ISO-8601, or e.g. 2h)")
        p.add_argument("--until", type=parse_instant, default=None, help="only dead letters written before this instant")
        p.add_argument("--bootstrap", default=None, help="override kafka.bootstrap_servers")
        if name == "replay":
            p.add_argument("--to", dest="target", required=True, help="topic to produce to (e.g. the input topic)")
            p.add_argument("--batch", type=int, default=1000, help="messages per transaction (default 1000)")
            p.add_argument("--limit", type=int, default=None, help="replay at most this many of the selected dead letters (oldest first), e.g. a sample first")
            p.add_argument("--dry-run", action="store_true", help="print what would be sent, send nothing")
            p.add_argument("--json", action="store_true", help="print the result as JSON")


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    topic: str

    @property
    def coordinates(self) -> str:
        return f"{self.topic}+{self.partition}+{self.offset}"

    @property
    def reason_codes(self) -> list[str]:
        try:
            codes = json.loads(self.headers.get("driftline.reason_codes", b"[]"))
        except ValueError:
            return []
        return [str(c) for c in codes] if isinstance(codes, list) else []

    @property
    def stage(self) -> str:
        return self.headers.get("driftline.stage", b"").decode("utf-8", "replace")

    @property
    def source(self) -> str:
        h = self.headers
        parts = [h.get(f"driftline.src.{k}", b"?").decode("utf-8", "replace") for k in ("topic", "partition", "offset")]
        return "+".join(parts)


def _ms(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


def _partitions(conf: dict[str, str], topic: str) -> list[int]:
    md = AdminClient(conf).list_topics(timeout=30)  # asking for one topic by name could auto-create it
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise LookupError(f"topic {topic!r} does not exist on {conf['bootstrap.servers']}")
    return sorted(t.partitions)


def read_topic(conf: dict[str, str], topic: str, *, since_ms: int | None = None, read_committed: bool = False, desc: str = "") -> Iterator[DeadLetter]:
    """Every message of ``topic`` from ``since_ms`` (or the beginning) up to the end offsets
    taken when the read starts (messages produced meanwhile are not waited for)."""
    parts = _partitions(conf, topic)
    consumer = Consumer(
        {
            **conf,
            "group.id": f"driftline-dead-letters-{uuid.uuid4().hex[:8]}",  # offsets are never committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1] for p in parts}
        starts = {p: 0 for p in parts}
        if since_ms is not None:
            for tp in consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in parts], timeout=30):
                starts[tp.partition] = ends[tp.partition] if tp.offset in (-1, OFFSET_END) else tp.offset
        remaining = {p for p in parts if starts[p] < ends[p]}
        if not remaining:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in remaining])
        with bar(total=sum(ends[p] - starts[p] for p in remaining), desc=desc or topic, unit="msg", unit_scale=True) as progress:
            while remaining:
                for msg in consumer.consume(1000, 1.0):
                    err = msg.error()
                    p = msg.partition()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            remaining.discard(p)
                            continue
                        raise RuntimeError(f"reading {topic}[{p}]: {err}")
                    if p not in remaining or msg.offset() >= ends[p]:
                        remaining.discard(p)
                        continue
                    progress.update(1)
                    yield DeadLetter(p, msg.offset(), msg.timestamp()[1], msg.key(), msg.value(), dict(msg.headers() or []), topic)
                    if msg.offset() + 1 >= ends[p]:
                        remaining.discard(p)
    finally:
        consumer.close()


def select(letters: Iterator[DeadLetter], *, reasons: list[str] | None, stages: list[str] | None, since_ms: int | None, until_ms: int | None) -> list[DeadLetter]:
    """The dead letters matching every given filter (reason patterns match any of a letter's codes)."""
    out = []
    for d in letters:
        if since_ms is not None and d.timestamp_ms < since_ms:
            continue
        if until_ms is not None and d.timestamp_ms >= until_ms:
            continue
        if stages and d.stage not in stages:
            continue
        if reasons and not any(fnmatch.fnmatchcase(code, pattern) for code in d.reason_codes for pattern in reasons):
            continue
        out.append(d)
    return out


def already_replayed(conf: dict[str, str], target: str, since_ms: int) -> set[str]:
    """``driftline.replay.dlq`` coordinates committed to ``target`` since ``since_ms``."""
    try:
        return {m.headers[H_DLQ].decode() for m in read_topic(conf, target, since_ms=since_ms, read_committed=True, desc=f"scan {target}") if H_DLQ in m.headers}
    except LookupError:
        return set()


def replay(conf: dict[str, str], source: str, target: str, letters: list[DeadLetter], *, batch: int = 1000) -> tuple[str, int, int]:
    """Send ``letters`` not yet on ``target``; returns (replay id, sent, skipped as already replayed)."""
    replay_id = uuid.uuid4().hex
    if not letters:
        return replay_id, 0, 0
    producer = Producer({**conf, "transactional.id": f"driftline-replay-{source}-to-{target}", "enable.idempotence": True, "linger.ms": 5})
    producer.init_transactions(60)  # aborts what a crashed run left open, fences a concurrent run
    done = already_replayed(conf, target, min(d.timestamp_ms for d in letters) - CLOCK_SKEW_MS)
    todo = [d for d in letters if d.coordinates not in done]
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    with bar(total=len(todo), desc=f"replay -> {target}", unit="msg") as progress:
        for i in range(0, len(todo), batch):
            producer.begin_transaction()
            for d in todo[i : i + batch]:
                headers = [(H_ID, replay_id.encode()), (H_DLQ, d.coordinates.encode()), (H_SRC, d.source.encode()), (H_REASONS, json.dumps(d.reason_codes).encode())]
                while True:
                    try:
                        producer.produce(target, value=d.value, key=d.key, headers=headers, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.commit_transaction(60)  # flushes; raises if any message failed
            if errors:
                raise RuntimeError(f"replay to {target!r}: delivery failed: {errors[:3]}")
            progress.update(min(batch, len(todo) - i))
    return replay_id, len(todo), len(letters) - len(todo)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    conf = cfg.kafka.client_config(bootstrap_servers=args.bootstrap or None)
    source = args.source or cfg.kafka.dead_letter_topic
    since_ms, until_ms = _ms(args.since), _ms(args.until)
    try:
        letters = select(read_topic(conf, source, since_ms=since_ms, desc=f"read {source}"), reasons=args.reason, stages=args.stage, since_ms=since_ms, until_ms=until_ms)
    except LookupError as exc:
        print(f"driftline dead-letters: {exc}", file=sys.stderr)
        return 2
    if args.action == "summary":
        counts = Counter((d.stage, code) for d in letters for code in (d.reason_codes or ["(none)"]))
        print(f"{len(letters)} dead letters in {source}")
        for (stage, code), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"{n:>8}  {stage:<10} {code}")
        return 0
    if getattr(args, "limit", None) is not None:
        letters = sorted(letters, key=lambda d: (d.timestamp_ms, d.partition, d.offset))[: max(0, args.limit)]
    if args.dry_run:
        for d in letters:
            print(f"{d.coordinates}  src {d.source}  {','.join(d.reason_codes)}  {len(d.value or b'')} bytes")
        print(f"dry run: {len(letters)} dead letters selected, nothing sent", file=sys.stderr)
        return 0
    started = time.monotonic()
    replay_id, sent, skipped = replay(conf, source, args.target, letters, batch=max(1, args.batch))
    result = {"replay_id": replay_id, "from": source, "to": args.target, "selected": len(letters), "sent": sent, "already_replayed": skipped, "seconds": round(time.monotonic() - started, 3)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"replay {replay_id}: {sent} sent to {args.target}, {skipped} already replayed earlier, of {len(letters)} selected from {source}")
    return 0

