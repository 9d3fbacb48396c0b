"""Dead-letter messages for refused records: original bytes plus reason headers.

The sink that writes to ``kafka.dead_letter_topic`` sends each :class:`DeadLetterMessage`
as is: ``value`` is the payload exactly as it arrived (``None`` for a message that had
no value), and the headers tell a producer why it was refused and where it came from,
so it can be fixed and replayed.  Headers never carry user text: reasons are fixed
messages, not values.

>>> import polars as pl
>>> from driftline.operators.batch import reject_rows, EVENT_SCHEMA
>>> rows = pl.DataFrame({"src_topic": ["events"], "src_partition": [0], "src_offset": [7], "src_timestamp": [0], "raw": [b"not json"]})
>>> rej = reject_rows(rows, "decode", [["bad_json"]], [["the payload is not valid JSON"]])
>>> msg = dead_letter_messages(rej)[0]
>>> msg.value, dict(msg.headers)["driftline.reason_codes"]
(b'not json', b'["bad_json"]')
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import polars as pl

from driftline.operators.validation.validator import VALIDATOR_VERSION

__all__ = ["HEADER_PREFIX", "DeadLetterMessage", "dead_letter_messages", "parse_dead_letter_headers"]

HEADER_PREFIX = "driftline."


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    """One message for the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter_messages(rejected: pl.DataFrame) -> list[DeadLetterMessage]:
    """Turn ``REJECT_SCHEMA`` rows into dead-letter messages, in row order.

    The key is the original message key (``src_key``, may be ``None``), so a replay
    lands on the same partition as the original; the coordinates headers identify the
    original message uniquely.
    """
    if rejected.height == 0:
        return []
    cols = rejected.select(
        "src_key",
        "src_topic",
        "src_partition",
        "src_offset",
        pl.col("src_timestamp").dt.epoch("ms").alias("ts"),
        "raw",
        "stage",
        "reason_codes",
        "reasons",
    )
    version = VALIDATOR_VERSION.encode()
    out = []
    for key, topic, partition, offset, ts, raw, stage, codes, reasons in cols.iter_rows():
        headers = [
            (f"{HEADER_PREFIX}stage", (stage or "").encode()),
            (f"{HEADER_PREFIX}reason_codes", orjson.dumps(codes or [])),
            (f"{HEADER_PREFIX}reasons", orjson.dumps(reasons or [])),
            (f"{HEADER_PREFIX}validator_version", version),
            (f"{HEADER_PREFIX}src_topic", (topic or "").encode()),
            (f"{HEADER_PREFIX}src_partition", str(partition).encode()),
            (f"{HEADER_PREFIX}src_offset", str(offset).encode()),
            (f"{HEADER_PREFIX}src_timestamp", str(ts).encode()),
        ]
        out.append(DeadLetterMessage(key, raw, headers))
    return out


def parse_dead_letter_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, object]:
    """Read back the headers written by :func:`dead_letter_messages` (for replay tools and tests)."""
    values = {k[len(HEADER_PREFIX) :]: v for k, v in (headers or []) if k.startswith(HEADER_PREFIX)}
    out: dict[str, object] = {k: v.decode() for k, v in values.items()}
    for k in ("reason_codes", "reasons"):
        if k in values:
            out[k] = orjson.loads(values[k])
    for k in ("src_partition", "src_offset", "src_timestamp"):
        if k in values and values[k] not in (b"None", b""):
            out[k] = int(values[k])
    return out
