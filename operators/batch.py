"""The unit every operator works on: a micro-batch of events.

A :class:`MicroBatch` holds the rows still in flight (``valid``) and the rows refused so
far (``rejected``).  Operators are plain functions ``MicroBatch -> MicroBatch`` (or
``DataFrame -> DataFrame``) over Polars frames; ``flows/`` only wires them into Bytewax.

Column contract of ``valid`` (``EVENT_SCHEMA`` plus what later stages add):

- the input fields of ``schemas/text_event.avsc``;
- ``src_topic``, ``src_partition``, ``src_offset``, ``src_timestamp``: the Kafka
  coordinates, which form the natural key of the enriched and rejected datasets;
  ``src_key``: the message key (bytes), kept for the dead-letter topic;
  ``src_traceparent``: the message's W3C ``traceparent`` header as received (unchecked;
  :mod:`driftline.tracing` validates it), never stored;
- ``raw``: the original payload bytes, kept for the dead-letter topic, never written
  to a dataset;
- ``payload_format``: ``json``, ``avro`` (single-object) or ``avro_confluent`` (registry);
- ``field_errors``: codes such as ``missing_field:text`` or ``wrong_type:event_time``
  found while decoding (the field is then null); the schema check refuses such rows;
- ``warnings``: names of validation rules that warned.

Column contract of ``rejected`` (``REJECT_SCHEMA``): the coordinates, ``raw``, the
event fields that could be read (nullable), the ``stage`` that refused it, and
``reason_codes`` (machine-readable) and ``reasons`` (human-readable) lists.  ``text``
is raw user text until the privacy stage masks it; the flows mask it before any sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa

ATTRIBUTES_DTYPE = pl.List(pl.Struct({"key": pl.Utf8, "value": pl.Utf8}))
TIME_DTYPE = pl.Datetime("ms", "UTC")
#: The Polars engine of the operators' lazy queries.  Polars 2's default (``"auto"``) may
#: run a lazy query on its streaming engine (the window step's grouped counts went there),
#: whose executor threads and per-query set-up cost more than a micro-batch of a few
#: thousand rows gains: the enrich flow in memory, 100,000 events in 5,000-row batches,
#: took 6.33 and 5.83 s of CPU against 6.88 and 6.29 s (the streaming executor's threads
#: 0.05 s against 0.55 s), with the same results.
ENGINE: Final = "in-memory"

COORDINATE_SCHEMA: dict[str, pl.DataType] = {
    "src_key": pl.Binary,
    "src_topic": pl.Utf8,
    "src_partition": pl.Int32,
    "src_offset": pl.Int64,
    "src_timestamp": TIME_DTYPE,
    "src_traceparent": pl.Utf8,
}

EVENT_FIELDS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.Utf8,
    "event_time": TIME_DTYPE,
    "source": pl.Utf8,
    "tenant": pl.Utf8,
    "user_id": pl.Utf8,
    "text": pl.Utf8,
    "attributes": ATTRIBUTES_DTYPE,
}

EVENT_SCHEMA: dict[str, pl.DataType] = {
    **EVENT_FIELDS_SCHEMA,
    **COORDINATE_SCHEMA,
    "raw": pl.Binary,
    "payload_format": pl.Utf8,
    "field_errors": pl.List(pl.Utf8),
    "warnings": pl.List(pl.Utf8),
}

REJECT_SCHEMA: dict[str, pl.DataType] = {
    **COORDINATE_SCHEMA,
    "raw": pl.Binary,
    "event_id": pl.Utf8,
    "event_time": TIME_DTYPE,
    "source": pl.Utf8,
    "tenant": pl.Utf8,
    "text": pl.Utf8,
    "stage": pl.Utf8,
    "reason_codes": pl.List(pl.Utf8),
    "reasons": pl.List(pl.Utf8),
}


def attribute_value(key: str, column: str = "attributes") -> pl.Expr:
    """The value of attribute ``key`` in a ``List(Struct{key, value})`` column (null if absent).

    >>> df = pl.DataFrame({"attributes": [[{"key": "rating", "value": "5"}], []]}, schema={"attributes": ATTRIBUTES_DTYPE})
    >>> df.select(attribute_value("rating"))["attributes"].to_list()
    ['5', None]
    """
    el = pl.element()
    return pl.col(column).list.eval(el.filter(el.struct.field("key") == key).struct.field("value")).list.first()


def utf8_lists(name: str, values: Sequence[Sequence[str] | None]) -> pl.Series:
    """A ``List(Utf8)`` column from Python lists (``None``: an empty list), built through
    Arrow offsets (Polars builds one inner Series per row from nested lists: ~10x slower).

    >>> utf8_lists("codes", [["a", "b"], None, ["c"]]).to_list()
    [['a', 'b'], [], ['c']]
    """
    offsets = [0]
    flat: list[str] = []
    for v in values:
        if v:
            flat.extend(v)
        offsets.append(len(flat))
    arr = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.large_string()))
    return pl.Series(name, arr).cast(pl.List(pl.Utf8))


def owned_array(values: Any, type: pa.DataType | None = None, mask: Any = None) -> pa.Array:
    """``pa.array(values, type, mask=mask)`` in Arrow's own memory.

    pyarrow wraps a numpy array of the same type without copying it, and such a buffer
    takes the interpreter lock when it is freed.  In a frame, Polars may free it on one of
    its threads while the thread holding the lock waits for Polars (Bytewax pickling a
    frame to another process: ``DataFrame.serialize`` keeps the lock): a deadlock that
    hung a 2-process run.  Every array built from numpy that goes into a frame goes
    through here (a copy of a few kilobytes per call).

    >>> import numpy as np
    >>> owned_array(np.arange(3, dtype=np.int32), pa.int32()).to_pylist()
    [0, 1, 2]
    """
    arr = pa.array(values, type, mask=mask)
    return pa.concat_arrays([arr]) if isinstance(values, np.ndarray) else arr


def names_where(name: str, n: int, named: Sequence[tuple[str, np.ndarray]]) -> pl.Series:
    """``List(Utf8)`` column ``name`` of ``n`` rows: per row, each name whose boolean mask
    holds there, in the order given (names may repeat), built from the masks' nonzero
    positions as Arrow offsets and values (no list per row).

    >>> import numpy as np
    >>> names_where("rules", 3, [("a", np.array([True, False, True])), ("b", np.array([True, False, False]))]).to_list()
    [['a', 'b'], [], ['a']]
    """
    if named and n:
        rows, cols = np.nonzero(np.column_stack([np.asarray(m, dtype=bool) for _, m in named]))
    else:
        rows = cols = np.zeros(0, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    values = pa.array(np.asarray([nm for nm, _ in named], dtype=object)[cols] if len(cols) else [], type=pa.large_string())
    return pl.Series(name, pa.LargeListArray.from_arrays(owned_array(offsets), values)).cast(pl.List(pl.Utf8))


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_SCHEMA)


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def repeated(name: str, value: object, n: int, dtype: pl.DataType) -> pl.Series:
    """Column ``name``: ``value`` repeated ``n`` times (without the query engine that
    ``pl.repeat`` and ``pl.lit`` go through: a fixed cost of ~0.1 ms per column).

    >>> repeated("stage", "decode", 2, pl.Utf8).to_list()
    ['decode', 'decode']
    """
    one = pl.Series(name, [value], dtype=dtype)
    return one.new_from_index(0, n) if n else one.clear()


def reject_rows(rows: pl.DataFrame, stage: str, codes: pl.Series | list[list[str]], reasons: pl.Series | list[list[str]]) -> pl.DataFrame:
    """Build ``REJECT_SCHEMA`` rows from event rows refused at ``stage``.

    Built column by column (the frame's own columns, cast only where the dtype differs;
    lists of codes and reasons through Arrow offsets): a refusal costs the same few
    column operations whatever the number of rows.
    """
    n = rows.height
    have = rows.schema
    out: list[pl.Series] = []
    for name, dtype in REJECT_SCHEMA.items():
        if name == "stage":
            s = repeated(name, stage, n, pl.Utf8)
        elif name in ("reason_codes", "reasons"):
            given = codes if name == "reason_codes" else reasons
            s = given if isinstance(given, pl.Series) else utf8_lists(name, given)
        elif name in have:
            s = rows.get_column(name)
        else:
            s = repeated(name, None, n, dtype)
        out.append((s if s.dtype == dtype else s.cast(dtype)).alias(name))
    return pl.DataFrame(out)


@dataclass(slots=True)
class MicroBatch:
    """Rows in flight plus rows refused so far; ``now`` is the processing time of the poll."""

    valid: pl.DataFrame = field(default_factory=empty_events)
    rejected: pl.DataFrame = field(default_factory=empty_rejects)
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def is_empty(self) -> bool:
        return self.valid.height == 0 and self.rejected.height == 0

    def refuse(self, mask: pl.Series, stage: str, codes: list[list[str]], reasons: list[list[str]]) -> MicroBatch:
        """Move the ``valid`` rows where ``mask`` is true to ``rejected``.

        ``codes`` and ``reasons`` are given for the refused rows only, in order.
        """
        if not mask.any():
            return self
        refused = self.valid.filter(mask)
        kept = self.valid.filter(~mask)
        new_rejects = reject_rows(refused, stage, codes, reasons)
        return MicroBatch(valid=kept, rejected=pl.concat([self.rejected, new_rejects], how="vertical"), now=self.now)
