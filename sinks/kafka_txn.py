"""Exactly-once Kafka outputs: transactional producers whose transactions carry what they cover.

Delivery guarantee: **exactly-once for consumers that read committed data**
(``isolation.level=read_committed``, librdkafka's default, not the Java client's), given
Bytewax recovery and a broker with transactions.  ``kafka.delivery: at_least_once``
selects :class:`~driftline.sinks.kafka.KafkaRecordsSink` instead.

How (see docs/reliability.md for the failure analysis):

- **One transactional producer per sink partition.**  Its ``transactional.id`` is
  ``<kafka.transactions.id_prefix>.<name>.<partition>``: the flow, its input topic and its
  output (``name``), and the sink partition, never the worker, so a partition that moves to
  another worker or process (a restart, a rescale) fences the producer it left behind
  (``init_transactions``).  Batches are routed to partitions by what they cover.
- **Transactions commit with Bytewax's epochs**: the first batch of an epoch begins one,
  ``snapshot()`` at the end of the epoch commits it (also earlier, when it holds
  ``kafka.transactions.max_bytes``).
- **Each transaction records what it covers.**  Every batch covers positions of a *cover*
  (:class:`~driftline.sinks.kafka.KafkaBatch`): source offsets of an input partition
  (output and dead-letter records), window starts of a window key (metrics and alerts).
  At commit the partition writes its coverage (the highest committed position of each
  cover) as one marker record to ``kafka.transactions.coverage_topic`` (compacted, keyed
  by the transactional id) and points its own consumer group (named like the
  transactional id) at that marker with ``send_offsets_to_transaction``: records, marker
  and pointer commit atomically.
- **Replays are harmless.**  Bytewax has no callback once an epoch's snapshot is durable,
  so a crash can follow a commit before the snapshot that knows of it is stored; the
  restart then replays input the transaction already covered.  On start-up the partition
  reads its group's committed offset (stable: a zombie's pending transaction is aborted by
  ``init_transactions`` first), fetches the marker it points at and skips every record at
  or below its coverage.  The coverage is also the partition's snapshot, so it survives
  the group's offsets expiring while the flow is stopped.

Records of one cover must reach the sink in position order, each position's records in
one batch (true for source offsets, which every step keeps in order, and for windows,
emitted once per key in window order with all their rows).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
import orjson
import polars as pl
from bytewax.dataflow import Stream, operator
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import Counter, Histogram

from driftline.config.kafka import KafkaConfig
from driftline.kafka_io import ensure_topics
from driftline.operators.placement import cover_part
from driftline.sinks.kafka import PRODUCER_DEFAULTS, RETRY_LEVELS, KafkaBatch, KafkaRecordsSink, RecordSender, check_refusals, retried, window_batches
from driftline.sinks.parquet import faults

_log = logging.getLogger("driftline.sinks.kafka")

#: Coordinator errors a client retries (the group or transaction coordinator moving or loading).
_COORDINATOR_ERRORS = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.CONCURRENT_TRANSACTIONS})
_MARKER_VERSION = 1
#: Seconds a transactional call given a 30 s timeout may take before its producer is
#: declared wedged and replaced (see :func:`_bounded`).
CALL_BOUND_S = 35.0
#: Seconds ``commit_transaction`` may keep timing out before its producer is replaced
#: (see :meth:`TransactionalPartition._commit_call`), and how long one call waits.
COMMIT_BOUND_S = 30.0
COMMIT_CALL_S = 10.0


@dataclass
class SinkCoverage:
    """Snapshot of a transactional sink partition: the highest committed position of each
    cover, and how many transactions it has committed."""

    positions: dict[str, int] = field(default_factory=dict)
    seq: int = 0


def transactional_id(prefix: str, name: str, part: str) -> str:
    """The transactional id (and coverage group) of one sink partition: printable, and
    long names shortened with a hash so two outputs never share one.

    >>> transactional_id("driftline", "enrich.events.events.enriched", "0")
    'driftline.enrich.events.events.enriched.0'
    >>> len(transactional_id("driftline", "x" * 500, "0"))
    200
    """
    raw = f"{prefix}.{name}"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", raw)
    if base != raw or len(base) + 1 + len(part) > 200:
        base = f"{base[: 199 - len(part) - 9]}-{zlib.crc32(raw.encode()):08x}"
    return f"{base}.{part}"


def _retrying(what: str, call: Any, deadline: float) -> Any:
    """``call()`` again while it fails with a retriable error, until ``deadline``."""
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0]
            if (err.retriable() or err.code() in _COORDINATOR_ERRORS) and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise RuntimeError(f"{what}: {err.name()}: {err.str()}") from exc


class Wedged(RuntimeError):
    """A librdkafka call did not return within its bound."""


def _bounded(what: str, call: Callable[[], Any], seconds: float) -> Any:
    """``call()`` in a helper thread, given ``seconds`` to return; :class:`Wedged` if it does not.

    librdkafka's ``send_offsets_to_transaction`` can block past its own timeout, forever,
    when the group coordinator it cached went down (a broker restart): the coordinator
    request's timeout is never checked (confluentinc/librdkafka#5456, #5511).  The blocked
    call cannot be interrupted, so the caller replaces the producer (fencing the wedged one)
    and leaves the helper thread blocked.

    >>> _bounded("add", lambda: 1 + 1, 1.0)
    2
    >>> try:
    ...     _bounded("sleep", lambda: time.sleep(2), 0.05)
    ... except Wedged as exc:
    ...     print(exc)
    sleep: no answer within 0.05 s
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    helper = threading.Thread(target=run, name="driftline-kafka-call", daemon=True)
    helper.start()
    helper.join(seconds)
    if helper.is_alive():
        raise Wedged(f"{what}: no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def encode_marker(txn_id: str, coverage: SinkCoverage) -> bytes:
    """The marker record's value: the coverage, JSON, zlib-compressed."""
    return zlib.compress(orjson.dumps({"v": _MARKER_VERSION, "sink": txn_id, "seq": coverage.seq, "positions": coverage.positions}), 1)


def decode_marker(txn_id: str, value: bytes | None) -> SinkCoverage | None:
    """The coverage a marker holds, or None when it is not this sink's.

    >>> decode_marker("s.0", encode_marker("s.0", SinkCoverage({"events+0": 41}, 3)))
    SinkCoverage(positions={'events+0': 41}, seq=3)
    >>> decode_marker("s.1", encode_marker("s.0", SinkCoverage({}, 1))) is None
    True
    """
    try:
        doc = orjson.loads(zlib.decompress(value or b""))
    except (zlib.error, orjson.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("sink") != txn_id or doc.get("v") != _MARKER_VERSION:
        return None
    return SinkCoverage({str(k): int(v) for k, v in doc["positions"].items()}, int(doc["seq"]))


def merge_coverage(*coverages: SinkCoverage | None) -> SinkCoverage:
    """The highest position of every cover, and the highest sequence number.

    >>> merge_coverage(SinkCoverage({"a": 3, "b": 9}, 2), None, SinkCoverage({"a": 5}, 4))
    SinkCoverage(positions={'a': 5, 'b': 9}, seq=4)
    """
    out = SinkCoverage()
    for c in coverages:
        if c is None:
            continue
        for k, v in c.positions.items():
            if v > out.positions.get(k, v - 1):
                out.positions[k] = v
        out.seq = max(out.seq, c.seq)
    return out


class CoverageStore:
    """Where a sink partition's committed coverage lives in Kafka: a marker record in the
    coverage topic, pointed at by the offset its consumer group (named like its
    transactional id) committed with the transaction."""

    def __init__(self, conf: dict[str, Any], topic: str, txn_id: str, timeout: float) -> None:
        self.topic = topic
        self.txn_id = txn_id
        self.timeout = timeout
        self._conf = {k: v for k, v in conf.items() if k not in _PRODUCER_ONLY}
        ensure_coverage_topic(self._conf, topic)
        self.partition = zlib.crc32(txn_id.encode()) % coverage_partitions(self._conf, topic)
        self.group_metadata: Any = None

    def read(self) -> SinkCoverage | None:
        """The coverage of the last committed transaction (None: none, or its marker is
        gone); also keeps the group's metadata for :meth:`pointer`."""
        group = Consumer({**self._conf, "group.id": self.txn_id, "isolation.level": "read_committed", "enable.auto.commit": False})
        try:
            self.group_metadata = group.consumer_group_metadata()
            deadline = time.monotonic() + self.timeout
            committed = _retrying(f"reading the coverage of {self.txn_id!r}", lambda: group.committed([TopicPartition(self.topic, self.partition)], 10), deadline)
        finally:
            group.close()
        offset = committed[0].offset
        if offset < 1:
            return None
        return self._fetch(offset - 1)

    def _fetch(self, offset: int) -> SinkCoverage | None:
        # read_uncommitted: the marker's transaction is committed (its offset is), and
        # other partitions' open transactions on this partition must not hold the read up
        reader = Consumer({**self._conf, "group.id": f"{self.txn_id}.reader", "isolation.level": "read_uncommitted", "enable.auto.commit": False, "enable.partition.eof": True})
        try:
            reader.assign([TopicPartition(self.topic, self.partition, offset)])
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                for msg in reader.consume(1, 1.0):
                    if msg.error() is None and msg.offset() == offset:
                        found = decode_marker(self.txn_id, msg.value())
                        if found is None:
                            _log.warning("the coverage marker of a Kafka sink is not its own; using its snapshot", extra={"fields": {"sink": self.txn_id}})
                        return found
                    if msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF or msg.error() is None and msg.offset() > offset:
                        _log.warning("the coverage marker of a Kafka sink is gone (compacted or deleted); using its snapshot", extra={"fields": {"sink": self.txn_id}})
                        return None
            raise RuntimeError(f"Kafka sink {self.txn_id!r}: could not read its coverage marker at {self.topic}[{self.partition}]@{offset} within {self.timeout:.0f} s")
        finally:
            reader.close()

    def pointer(self, marker_offset: int) -> list[TopicPartition]:
        """The offsets to send with the transaction: this marker is the coverage."""
        return [TopicPartition(self.topic, self.partition, marker_offset + 1)]


_PRODUCER_ONLY = frozenset(
    {"enable.idempotence", "linger.ms", "compression.type", "message.max.bytes", "transactional.id", "transaction.timeout.ms", "delivery.report.only.error", "acks", "batch.size", "queue.buffering.max.messages", "queue.buffering.max.kbytes"}
)
_coverage_topics: dict[tuple[str, str], int] = {}


def ensure_coverage_topic(conf: dict[str, Any], topic: str) -> None:
    """Create the coverage topic if needed: compacted (the latest marker of each sink stays)."""
    key = (str(conf.get("bootstrap.servers")), topic)
    if key not in _coverage_topics:
        extra = {k: v for k, v in conf.items() if k != "bootstrap.servers"}
        ensure_topics(conf["bootstrap.servers"], [topic], partitions=1, extra=extra, config={"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"})
        _coverage_topics[key] = 0


def coverage_partitions(conf: dict[str, Any], topic: str) -> int:
    """How many partitions the coverage topic has (read once per process)."""
    key = (str(conf.get("bootstrap.servers")), topic)
    if not _coverage_topics.get(key):
        from confluent_kafka.admin import AdminClient

        md = AdminClient({k: v for k, v in conf.items() if k not in ("group.id", "isolation.level", "enable.auto.commit")}).list_topics(topic, timeout=30)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            raise RuntimeError(f"the coverage topic {topic!r} cannot be described on {conf.get('bootstrap.servers')}")
        _coverage_topics[key] = len(t.partitions)
    return _coverage_topics[key]


class FatalErrors:
    """The producer's error callback: remembers a fatal error (fenced by a newer producer
    of the same sink partition, or a broken transaction state) to report it by name."""

    def __init__(self) -> None:
        self.error: Any = None

    def __call__(self, err: Any) -> None:
        if err.fatal() and self.error is None:
            self.error = err

    def check(self, name: str) -> None:
        if self.error is not None:
            hint = "; another instance of this flow writes the same output (zombie fenced)" if self.error.code() == KafkaError._FENCED else ""
            raise RuntimeError(f"Kafka sink {name!r}: {self.error.name()}: {self.error.str()}{hint}")


class TransactionalPartition(StatefulSinkPartition[KafkaBatch, SinkCoverage]):
    """One sink partition: a transactional producer, its coverage and the open transaction.

    ``renew`` makes a new producer of the same transactional id (and its error callback):
    it replaces a wedged one (see :func:`_bounded`), fencing it and aborting its open
    transaction, whose records are then sent again in a new one."""

    def __init__(
        self,
        sender: RecordSender,
        store: CoverageStore,
        coverage: SinkCoverage,
        fatal: FatalErrors,
        *,
        max_bytes: int,
        timeout: float,
        name: str,
        renew: Callable[[], tuple[RecordSender, FatalErrors]] | None = None,
    ) -> None:
        self._sender = sender
        self._fatal = fatal
        self._producer = sender.producer
        self._renew_sender = renew
        self._renewed = False  # a new producer: no transaction of its own to abort before resending
        self._store = store
        self._covered = coverage
        self._pending: dict[str, int] = {}
        self._kept: list[tuple[KafkaBatch, Any]] = []  # the open transaction's batches: sent again if it must be aborted
        self._kept_bytes = 0
        self._open = False
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._name = name  # metrics label, fault points, errors
        self._marker_offset: int | None = None
        self.records_replayed = 0  # skipped: a committed transaction holds them
        self._replayed_logged = 0
        self._failed: str | None = None  # the error that stopped this partition (see close)

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """Log the first error that stops this partition: Bytewax then unwinds and closes the
        partition, and an error raised again in close() would abort the process before
        anything printed this one."""
        try:
            yield
        except Exception as exc:
            if self._failed is None:
                self._failed = f"{type(exc).__name__}: {str(exc)[:500]}"
                _log.error("kafka_sink_failed", extra={"fields": {"sink": self._store.txn_id, "error": self._failed}})
            raise

    def write_batch(self, items: list[KafkaBatch]) -> None:
        with self._failing():
            for batch in items:
                skip = self._covered_part(batch)
                if skip is not None and skip.all():
                    continue
                if not self._open:
                    self._producer.begin_transaction()
                    self._open = True
                self._kept.append((batch, skip))
                self._kept_bytes += batch.nbytes if batch.nbytes is not None else 1024 * len(batch)
                try:
                    self._sender.send(batch, skip=skip)
                except KafkaException as exc:  # the transaction broke (a refused record): again, in a new one
                    if not _broken(exc):
                        raise
                    self._resend(time.monotonic() + self._timeout)
                if self._kept_bytes >= self._max_bytes:
                    self._commit()
            self._producer.poll(0)

    def _covered_part(self, batch: KafkaBatch) -> Any:
        """Which records of ``batch`` a committed transaction already holds (None: none);
        notes the positions the open transaction will cover."""
        if batch.cover is None or batch.positions is None or not len(batch.positions):
            return None
        skip = None
        done = self._covered.positions.get(batch.cover)
        if done is not None and int(batch.positions.min()) <= done:
            skip = batch.positions <= done
            n = int(skip.sum())
            self.records_replayed += n
            _REPLAYED.labels(self._name).inc(n)
        hi = int(batch.positions.max())
        if hi > self._pending.get(batch.cover, hi - 1):
            self._pending[batch.cover] = hi
        return skip

    def snapshot(self) -> SinkCoverage:
        if self._open:
            with self._failing():
                self._commit()
        if self.records_replayed > self._replayed_logged:
            _log.info("kafka_sink_replayed", extra={"fields": {"sink": self._store.txn_id, "records": self.records_replayed - self._replayed_logged}})
            self._replayed_logged = self.records_replayed
        return SinkCoverage(dict(self._covered.positions), self._covered.seq)

    def close(self) -> None:
        """Commit what is open and flush.  After a failure (the flow is stopping with that
        error) nothing is committed: as after a SIGKILL, the open transaction is aborted
        when the next producer of this transactional id starts, and the records are sent
        again from the last snapshot."""
        if self._failed is not None:
            _log.warning("kafka_sink_closed_after_failure", extra={"fields": {"sink": self._store.txn_id, "error": self._failed}})
            return
        if self._open:
            self._commit()
        self._producer.flush(self._timeout)

    # -- committing ----------------------------------------------------------------

    def _on_marker(self, err: Any, msg: Any) -> None:
        if err is None:
            self._marker_offset = msg.offset()

    def _commit(self) -> None:
        started = time.perf_counter()
        coverage = merge_coverage(self._covered, SinkCoverage(self._pending, self._covered.seq + 1))
        deadline = time.monotonic() + self._timeout
        while not self._try_commit(coverage, deadline):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka sink {self._name!r}: no transaction could be committed within {self._timeout:.0f} s")
            self._resend(deadline)
        faults.reached("kafka_after_commit", self._name)
        self._covered = coverage
        self._pending = {}
        self._kept = []
        self._kept_bytes = 0
        self._open = False
        _COMMITS.labels(self._name).inc()
        _COMMIT_SECONDS.labels(self._name).observe(time.perf_counter() - started)

    def _try_commit(self, coverage: SinkCoverage, deadline: float) -> bool:
        """Marker, pointer, commit: True once committed, False when the transaction must
        be aborted.  Retriable errors (a broker outage) are retried until ``deadline``."""
        try:
            self._marker_offset = None
            marker = encode_marker(self._store.txn_id, coverage)
            self._producer.produce(self._store.topic, marker, self._store.txn_id.encode(), partition=self._store.partition, on_delivery=self._on_marker)
            self._flush(deadline)
            if self._marker_offset is None:
                return False  # the marker was refused: the transaction is in error
            offsets = self._store.pointer(self._marker_offset)
            send = lambda: self._producer.send_offsets_to_transaction(offsets, self._store.group_metadata, 30)  # noqa: E731
            _retrying(f"Kafka sink {self._name!r}: sending its coverage", lambda: _bounded("send_offsets_to_transaction", send, CALL_BOUND_S), deadline)
            faults.reached("kafka_before_commit", self._name)
            _retrying(f"Kafka sink {self._name!r}: committing", self._commit_call(deadline), deadline)
            return True
        except Wedged as exc:
            return self._settle(str(exc), coverage, deadline)
        except KafkaException as exc:
            if _broken(exc):
                return False
            raise
        except RuntimeError as exc:
            if isinstance(exc.__cause__, KafkaException) and _broken(exc.__cause__):
                return False
            raise

    def _commit_call(self, deadline: float) -> Callable[[], None]:
        """``commit_transaction`` for :func:`_retrying`: a call that raises :class:`Wedged`
        once the calls have answered ``_TIMED_OUT`` for :data:`COMMIT_BOUND_S` in a row
        (before ``deadline``).

        librdkafka can go on answering ``_TIMED_OUT`` ("retry call to resume") after the
        broker is back, never sending the commit again: the broker-outage test once saw
        240 s of it, the broker back within 20 s."""
        timed_out_since: float | None = None

        def commit() -> None:
            nonlocal timed_out_since
            called = time.monotonic()
            try:
                self._producer.commit_transaction(COMMIT_CALL_S)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError._TIMED_OUT or not err.retriable():
                    timed_out_since = None
                    raise
                timed_out_since = called if timed_out_since is None else timed_out_since
                now = time.monotonic()
                if now - timed_out_since >= COMMIT_BOUND_S and now < deadline:
                    raise Wedged(f"commit_transaction: timed out for {now - timed_out_since:.0f} s") from exc
                raise

        return commit

    def _settle(self, why: str, coverage: SinkCoverage, deadline: float) -> bool:
        """Replace the wedged producer (:meth:`_renew`) and tell whether its transaction,
        which was to cover ``coverage``, committed.

        The new producer fences the old one, and the broker then finishes the old
        transaction: committed if its commit had reached the coordinator, else aborted.
        Which one it was is read from Kafka: the sink's consumer group points at the marker
        of its last committed transaction, and that marker's sequence number is this
        transaction's when it committed.  The records are sent again only when it was
        aborted (always, when the wedged call came before the commit), so none is
        committed twice."""
        self._renew(why, deadline)
        found = self._store.read()
        committed = found is not None and found.seq >= coverage.seq
        _log.warning("kafka_commit_settled", extra={"fields": {"sink": self._store.txn_id, "committed": committed, "transaction": coverage.seq}})
        if committed:
            self._renewed = False  # the new producer has no transaction to abort, and none to send again
        return committed

    def _renew(self, why: str, deadline: float) -> None:
        """Replace the wedged producer by a new one of the same transactional id."""
        if self._renew_sender is None:
            raise RuntimeError(f"Kafka sink {self._name!r}: {why}")
        _log.warning("kafka_producer_wedged", extra={"fields": {"sink": self._store.txn_id, "call": why, "records": sum(len(b) for b, _ in self._kept)}})
        _WEDGED.labels(self._name).inc()
        sender, fatal = self._renew_sender()
        # fences the wedged producer; the broker aborts its open transaction (a fresh producer
        # looks its coordinators up anew, so this call keeps its own timeout, as at start-up)
        _retrying(f"Kafka sink {self._name!r}: initialising transactions", lambda: sender.producer.init_transactions(30), deadline)
        self._sender, self._fatal, self._producer = sender, fatal, sender.producer
        self._renewed = True

    def _flush(self, deadline: float) -> None:
        while True:
            try:
                left = self._producer.flush(1.0)
            except (KafkaException, SystemError) as exc:  # a fatal error surfaces in a delivery callback
                cause = exc if isinstance(exc, KafkaException) else exc.__cause__ or exc.__context__
                if isinstance(cause, KafkaException):
                    self._fatal(cause.args[0])
                self._fatal.check(self._name)
                raise
            if not left:
                return
            self._fatal.check(self._name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka sink {self._name!r}: messages still undelivered after {self._timeout:.0f} s (broker unreachable?)")

    def _resend(self, deadline: float) -> None:
        """Abort the open transaction and send its records again in a new one, until the
        broker takes them all.  A record it refuses for a reason of its own
        (:data:`PER_RECORD_ERRORS`) goes up one level each time (:data:`RETRY_LEVELS`:
        alone, cut down, a header-only stub): never again as it was, so one record cannot
        stop the flow.  Records purged because the transaction broke are sent as they are."""
        records = [(batch.topic or self._sender.topic, r) for batch, skip in self._kept for i, r in enumerate(batch) if skip is None or not skip[i]]
        levels = [0] * len(records)
        errors: list[Any] = [None] * len(records)
        self._sender.forget_limits()  # the refusal may come from a topic limit changed since start-up
        while True:
            _log.warning("Kafka transaction aborted; its records are sent again", extra={"fields": {"sink": self._store.txn_id, "records": len(records), "alone": sum(1 for v in levels if v)}})
            if self._renewed:  # the broker aborted the wedged producer's transaction when it was fenced
                self._renewed = False
            else:
                _retrying(f"Kafka sink {self._name!r}: aborting a transaction", lambda: self._producer.abort_transaction(30), deadline)
            self._producer.begin_transaction()
            refused: dict[int, Any] = {}
            sent = [retried(r, self._sender.limit(t), levels[i], errors[i]) for i, (t, r) in enumerate(records)]
            try:
                for i, (topic, _r) in enumerate(records):
                    note = functools.partial(_note_refusal, refused, i)
                    if levels[i]:
                        self._sender.send_alone(topic, sent[i], self._timeout, note)
                    else:
                        self._sender.send(KafkaBatch([sent[i]], topic=topic), on_delivery=note)
            except KafkaException as exc:  # the transaction broke on the way: what was noted is known
                if not _broken(exc):
                    raise
            self._flush(deadline)
            refused = {i: e for i, e in refused.items() if e.code() != KafkaError._PURGE_QUEUE}
            if not refused:
                self._kept = [(KafkaBatch([r], topic=t), None) for (t, _o), r in zip(records, sent)]
                return
            check_refusals(refused.values(), f"Kafka sink {self._name!r}")
            for i, err in refused.items():
                if levels[i] == len(RETRY_LEVELS):
                    raise RuntimeError(f"Kafka sink {self._name!r}: a record was refused even as a header-only stub: {err.name()}")
                levels[i] += 1
                errors[i] = err


def _broken(exc: KafkaException) -> bool:
    """Whether ``exc`` says the open transaction must be aborted (and can be: not fatal)."""
    err = exc.args[0]
    return not err.fatal() and (err.txn_requires_abort() or err.code() == KafkaError._STATE)


def _note_refusal(refused: dict[int, Any], where: int, err: Any, _msg: Any) -> None:
    if err is not None:
        refused[where] = err


_REPLAYED = Counter("driftline_kafka_sink_records_replayed_total", "Records a transactional Kafka sink skipped because a committed transaction holds them (replays after a restart).", ["sink"])
_COMMITS = Counter("driftline_kafka_sink_transactions_total", "Transactions committed by transactional Kafka sinks.", ["sink"])
_WEDGED = Counter("driftline_kafka_sink_wedged_calls_total", "Transactional producer calls that did not return within their bound, or commits that kept timing out; each replaced its producer (librdkafka#5456).", ["sink"])
_COMMIT_SECONDS = Histogram(
    "driftline_kafka_sink_commit_seconds", "Time to commit one transaction (marker, coverage offsets, commit).", ["sink"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
)


class TransactionalKafkaSink(FixedPartitionedSink[KafkaBatch, SinkCoverage]):
    """Write :class:`~driftline.sinks.kafka.KafkaBatch` items exactly once for
    read_committed consumers (see the module docstring), to ``topic`` or the topic a batch
    names.  Items are ``(partition, batch)`` pairs from :meth:`route`; use
    :func:`kafka_output`.

    ``name`` identifies the output among all that write with the same broker: the flow,
    its input and its destination (``enrich.events.events.enriched``); with the sink
    partition it makes the transactional id.  Size limits and refused records are
    handled as in :class:`~driftline.sinks.kafka.KafkaRecordsSink`.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        name: str,
        more_topics: Iterable[str] = (),
        partitions: int = 1,
        id_prefix: str = "driftline",
        coverage_topic: str = "driftline.sink-coverage",
        timeout_ms: int = 60_000,
        max_bytes: int = 32 * 2**20,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._conf = {"bootstrap.servers": bootstrap_servers, **PRODUCER_DEFAULTS, **(extra or {})}
        self.topics = [topic, *more_topics]
        self.name = name
        self.parts = partitions
        self.id_prefix = id_prefix
        self.coverage_topic = coverage_topic
        self.timeout_ms = timeout_ms
        self.max_bytes = max_bytes
        self._markers: dict[str, SinkCoverage | None] = {}  # each partition's committed coverage, read once per process (see _siblings_coverage)
        self._siblings_lock = threading.Lock()

    @classmethod
    def from_config(cls, kafka: KafkaConfig, topic: str, *, name: str, more_topics: Iterable[str] = ()) -> TransactionalKafkaSink:
        """The sink for ``topic`` (and the ``more_topics`` batches may name) with the
        ``kafka`` section's brokers, extra settings and ``kafka.transactions``."""
        t = kafka.transactions
        return cls(
            kafka.bootstrap_servers,
            topic,
            name=name,
            more_topics=more_topics,
            partitions=t.partitions,
            id_prefix=t.id_prefix,
            coverage_topic=t.coverage_topic,
            timeout_ms=t.timeout_ms,
            max_bytes=t.max_bytes,
            extra=kafka.client_config(),
        )

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.parts)]

    def _siblings_coverage(self, for_part: str, own: SinkCoverage | None, timeout: float) -> dict[str, int]:
        """What the other partitions of this output committed (each cover's highest
        position).  A partition skips those positions too: a cover that a routing change
        (or a partition count change) moved here from another partition is not written
        twice when the restart replays input that partition had already committed.

        ``own`` is ``for_part``'s marker, just read after fencing its predecessor; each
        other marker is read once per process, when the first partition that needs it is
        built, so no marker is read twice."""
        if self.parts == 1:
            return {}
        with self._siblings_lock:
            self._markers[for_part] = own
            for part in self.list_parts():
                if part not in self._markers:
                    self._markers[part] = CoverageStore(self._conf, self.coverage_topic, transactional_id(self.id_prefix, self.name, part), timeout).read()
            return merge_coverage(*(c for part, c in self._markers.items() if part != for_part)).positions

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def route(self, batch: KafkaBatch) -> tuple[str, KafkaBatch]:
        """The partition of a batch: by its cover, so each cover has one transactional
        producer; window covers (``<topic>|<key>``) by their key alone, so a window's
        metrics row and its alerts share a producer and a transaction."""
        if self.parts == 1 or batch.cover is None:
            return "0", batch
        return str(cover_part(batch.cover.rpartition("|")[2], self.parts)), batch

    def build_part(self, step_id: str, for_part: str, resume_state: SinkCoverage | None) -> TransactionalPartition:
        if resume_state is not None and not isinstance(resume_state, SinkCoverage):
            raise TypeError(f"step {step_id!r}: resume state of partition {for_part} is a {type(resume_state).__name__}, expected SinkCoverage")
        txn_id = transactional_id(self.id_prefix, self.name, for_part)
        timeout = self.timeout_ms / 1000

        def new_sender() -> tuple[RecordSender, FatalErrors]:
            fatal = FatalErrors()  # each producer its own: a fenced predecessor's fatal error is not the new one's
            return RecordSender({**self._conf, "transactional.id": txn_id, "transaction.timeout.ms": self.timeout_ms, "error_cb": fatal}, self.topics), fatal

        sender, fatal = new_sender()
        deadline = time.monotonic() + timeout
        # A connection first: librdkafka asks for the transaction coordinator when
        # init_transactions starts, and with no broker connection up yet it waits for its
        # next coordinator query, about half a second (a new producer on the local broker:
        # 60-510 ms to initialise, 5-9 ms after a 55 ms metadata request).  The request
        # names the sink's own topic, as its first record would.
        _retrying(f"Kafka sink {txn_id!r}: connecting", lambda: sender.producer.list_topics(sender.topic, timeout=max(0.1, deadline - time.monotonic())), deadline)
        try:  # fences the partition's previous producer and aborts its open transaction
            _retrying(f"Kafka sink {txn_id!r}: initialising transactions", lambda: sender.producer.init_transactions(30), deadline)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; a broker without transactions needs kafka.delivery: at_least_once") from exc.__cause__
        store = CoverageStore(self._conf, self.coverage_topic, txn_id, timeout)
        found = store.read()
        coverage = merge_coverage(resume_state, found)
        others = self._siblings_coverage(for_part, found, timeout)
        moved_in = sum(1 for k, v in others.items() if v > coverage.positions.get(k, -1))
        coverage = SinkCoverage(merge_coverage(coverage, SinkCoverage(others)).positions, coverage.seq)
        _log.info(
            "kafka_sink_resumed",
            extra={
                "fields": {
                    "sink": txn_id,
                    "covers": len(coverage.positions),
                    "transactions": coverage.seq,
                    "after_snapshot": coverage.seq - (resume_state.seq if resume_state else 0),
                    "covers_from_other_partitions": moved_in,
                }
            },
        )
        return TransactionalPartition(sender, store, coverage, fatal, max_bytes=self.max_bytes, timeout=timeout, name=self.name, renew=new_sender)


def kafka_sink(kafka: KafkaConfig, topic: str, *, name: str, more_topics: Iterable[str] = ()) -> KafkaRecordsSink | TransactionalKafkaSink:
    """The Kafka sink ``kafka.delivery`` asks for: transactional (``exactly_once``, the
    default) or at-least-once, for ``topic`` and the ``more_topics`` batches may name.
    ``name``: see :class:`TransactionalKafkaSink`."""
    if kafka.delivery == "at_least_once":
        return KafkaRecordsSink.from_config(kafka, topic, more_topics=more_topics)
    return TransactionalKafkaSink.from_config(kafka, topic, name=name, more_topics=more_topics)


def output_sink(kafka: KafkaConfig, flow: str, source: str, topic: str, *more_topics: str) -> KafkaRecordsSink | TransactionalKafkaSink:
    """The sink of a flow's output to ``topic`` (and ``more_topics``) by :func:`kafka_sink`,
    named after the flow, its input topic ``source`` and the topics it writes, so no two
    outputs on one cluster share a transactional id.

    >>> output_sink(KafkaConfig(), "enrich", "events", "driftline.metrics", "driftline.alerts").name
    'enrich.events.driftline.metrics+driftline.alerts'
    """
    return kafka_sink(kafka, topic, name=f"{flow}.{source}.{'+'.join((topic, *more_topics))}", more_topics=more_topics)


def window_topics_output(
    metrics_rows: Stream[pl.DataFrame],
    alerts_rows: Stream[pl.DataFrame],
    kafka: KafkaConfig,
    *,
    windows: Any = None,
    metrics: Any = None,
    alerts: Any = None,
    record_steps: tuple[str, str] = ("metrics_records", "alerts_records"),
) -> None:
    """Wire window rows to ``kafka.metrics_topic`` and alerts to ``kafka.alerts_topic``:
    through ``windows``, one sink for both (an alert commits in the transaction of its
    window's row, never before it), or through separate ``metrics`` and ``alerts`` sinks
    (tests' in-memory sinks).  Steps: ``record_steps`` (the records of each), then
    ``metrics_topic_out`` and ``alerts_topic_out``, which write to their sinks or, with
    ``windows``, route to its partitions for ``window_topics_out`` to write."""
    from driftline import tracing  # timers and spans

    if windows is None and metrics is None and alerts is None:
        return
    m_topic, a_topic = kafka.metrics_topic, kafka.alerts_topic
    m = op.map(record_steps[0], metrics_rows, tracing.step(record_steps[0], lambda f: window_batches(f, m_topic)))
    a = op.map(record_steps[1], alerts_rows, tracing.step(record_steps[1], lambda f: window_batches(f, a_topic)))
    if windows is not None:
        sink = tracing.sink("window_topics_out", windows)
        both = op.merge("window_records", kafka_routed("metrics_topic_out", m, sink), kafka_routed("alerts_topic_out", a, sink))
        op.output("window_topics_out", both, sink)
        return
    if metrics is not None:
        kafka_output("metrics_topic_out", m, tracing.sink("metrics_topic_out", metrics))
    if alerts is not None:
        kafka_output("alerts_topic_out", a, tracing.sink("alerts_topic_out", alerts))


@operator
def kafka_routed(step_id: str, up: Stream[list[KafkaBatch]], sink: Any) -> Stream[Any]:
    """The non-empty batches of a stream of lists of
    :class:`~driftline.sinks.kafka.KafkaBatch`, routed to the partitions of ``sink`` when
    it is a :class:`TransactionalKafkaSink` (``(partition key, batch)``), as they are for
    any other sink.

    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSource, run_main
    >>> from driftline.testing import InMemorySink
    >>> flow = Dataflow("doc")
    >>> batches = kafka_routed("routed", op.input("in", flow, TestingSource([[KafkaBatch(), KafkaBatch([(b"k", b"v", [])])]])), InMemorySink())
    >>> out = InMemorySink()
    >>> op.output("out", batches, out); run_main(flow); out.items
    [[(b'k', b'v', [])]]
    """
    batches = op.flat_map("batches", up, _batches)
    return op.map("route", batches, sink.route) if isinstance(sink, TransactionalKafkaSink) else batches


@operator
def kafka_output(step_id: str, up: Stream[list[KafkaBatch]], sink: Any) -> None:
    """Write a stream of lists of :class:`~driftline.sinks.kafka.KafkaBatch` to a Kafka
    sink: routed to its partitions for a :class:`TransactionalKafkaSink`, as they are for
    any other sink (at-least-once, or a test's in-memory sink).

    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSource, run_main
    >>> from driftline.testing import InMemorySink
    >>> flow = Dataflow("doc")
    >>> out = InMemorySink()
    >>> kafka_output("out", op.input("in", flow, TestingSource([[KafkaBatch([(b"k", b"v", [])])], []])), out)
    >>> run_main(flow); out.items
    [[(b'k', b'v', [])]]
    """
    op.output("write", kafka_routed("routed", up, sink), sink)


def _batches(items: list[KafkaBatch]) -> list[KafkaBatch]:
    return [b for b in items if len(b)]


__all__ = ["CALL_BOUND_S", "CoverageStore", "SinkCoverage", "TransactionalKafkaSink", "TransactionalPartition", "kafka_output", "kafka_routed", "kafka_sink", "output_sink", "transactional_id", "window_topics_output", "Wedged"]
