"""Decode model-call telemetry (``schemas/model_call.avsc``) into window input rows.

Payloads are JSON objects or Avro single-object encoding (``C3 01`` marker, the 8-byte
CRC-64-AVRO fingerprint of ``model_call``, the datum), told apart by the marker as in
:mod:`driftline.operators.decode`.  Undecodable payloads and rows missing a required
field are refused (stage ``decode``) with the same reason codes.

The valid rows use the column names the window aggregation reads
(``monitoring.columns`` defaults): ``call_id`` is also ``event_id``, ``service`` is also
``source``, and ``model_name``, ``model_input_tokens``, ``model_output_tokens``,
``model_latency_ms``, ``model_confidence``, ``model_error_class``, ``model_label``
carry the call's fields; ``prompt`` and ``completion`` are raw until masked.

>>> b = decode_telemetry([RawRecord(b'{"call_id":"c1","event_time":0,"service":"s","model":"m",'
...     b'"input_tokens":3,"output_tokens":4,"latency_ms":12.5}', "t", 0, 0, 0)])
>>> b.valid.select("event_id", "source", "model_name", "model_latency_ms").row(0), b.rejected.height
(('c1', 's', 'm', 12.5), 0)
"""

from __future__ import annotations

from typing import Any

import polars as pl

from driftline.config.kafka import DecodeConfig
from driftline.operators.batch import TIME_DTYPE, empty_rejects, reject_rows
from driftline.operators.decode import DECODE_REASONS, RawBatch, RawRecord, Undecodable, _coerce_time, as_raw_frame, columns_frame, decode_payload

TELEMETRY_SCHEMA: dict[str, pl.DataType] = {
    "call_id": pl.Utf8,
    "event_id": pl.Utf8,
    "event_time": TIME_DTYPE,
    "service": pl.Utf8,
    "source": pl.Utf8,
    "model_name": pl.Utf8,
    "model_input_tokens": pl.Int64,
    "model_output_tokens": pl.Int64,
    "model_latency_ms": pl.Float64,
    "model_confidence": pl.Float64,
    "model_error_class": pl.Utf8,
    "model_label": pl.Utf8,
    "prompt": pl.Utf8,
    "completion": pl.Utf8,
    "src_topic": pl.Utf8,
    "src_partition": pl.Int32,
    "src_offset": pl.Int64,
    "src_timestamp": TIME_DTYPE,
    "payload_format": pl.Utf8,
}

_REQUIRED_STR = ("call_id", "service", "model")
_REQUIRED_NUM = ("input_tokens", "output_tokens", "latency_ms")


class TelemetryBatch:
    """Decoded telemetry: ``valid`` rows (:data:`TELEMETRY_SCHEMA`) and ``rejected`` rows (``REJECT_SCHEMA``)."""

    __slots__ = ("valid", "rejected")

    def __init__(self, valid: pl.DataFrame, rejected: pl.DataFrame) -> None:
        self.valid = valid
        self.rejected = rejected


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def decode_telemetry(records: RawBatch, config: DecodeConfig | None = None) -> TelemetryBatch:
    """Decode a poll of telemetry messages (a raw frame or :class:`RawRecord` objects), keeping input order."""
    raw = as_raw_frame(records)
    limit = (config or DecodeConfig()).max_payload_bytes
    cols: dict[str, list[Any]] = {k: [] for k in TELEMETRY_SCHEMA if k not in _COORDINATES}
    ok: list[int] = []
    bad: list[int] = []
    codes: list[list[str]] = []
    reasons: list[list[str]] = []
    for j, value in enumerate(raw["raw"].to_list()):
        try:
            obj, fmt = decode_payload(value, limit, "model_call")
            code = ""
        except Undecodable as exc:
            obj, fmt, code = None, "", exc.code
        row_codes: list[str] = []
        if obj is not None:
            for name in _REQUIRED_STR:
                if not isinstance(obj.get(name), str):
                    row_codes.append(("missing_field:" if obj.get(name) is None else "wrong_type:") + name)
            for name in _REQUIRED_NUM:
                if _num(obj.get(name)) is None:
                    row_codes.append(("missing_field:" if obj.get(name) is None else "wrong_type:") + name)
            t = _coerce_time(obj.get("event_time"))
            if t is None:
                row_codes.append("missing_field:event_time" if obj.get("event_time") is None else "wrong_type:event_time")
            conf = obj.get("confidence")
            if conf is not None and (_num(conf) is None or not 0.0 <= float(conf) <= 1.0):
                row_codes.append("out_of_range:confidence")
        else:
            row_codes = [code]
        if row_codes:
            bad.append(j)
            codes.append(row_codes)
            reasons.append([DECODE_REASONS.get(c, c.replace("_", " ").replace(":", ": ")) for c in row_codes])
            continue
        assert obj is not None
        opt = {k: obj.get(k) if isinstance(obj.get(k), str) else None for k in ("error_class", "label", "prompt", "completion")}
        values = {
            "call_id": obj["call_id"],
            "event_id": obj["call_id"],
            "event_time": t,  # coerced while checking the row above
            "service": obj["service"],
            "source": obj["service"],
            "model_name": obj["model"],
            "model_input_tokens": int(obj["input_tokens"]),
            "model_output_tokens": int(obj["output_tokens"]),
            "model_latency_ms": float(obj["latency_ms"]),
            "model_confidence": _num(obj.get("confidence")),
            "model_error_class": opt["error_class"],
            "model_label": opt["label"],
            "prompt": opt["prompt"],
            "completion": opt["completion"],
            "payload_format": fmt,
        }
        for k, v in values.items():
            cols[k].append(v)
        ok.append(j)
    decoded = columns_frame(cols, {k: t for k, t in TELEMETRY_SCHEMA.items() if k not in _COORDINATES})
    coords = (raw if len(ok) == raw.height else raw[ok]).select(_COORDINATES)
    valid = decoded.hstack(coords.get_columns()).select([pl.col(c).cast(t) for c, t in TELEMETRY_SCHEMA.items()])
    rejected = reject_rows(raw[bad], "decode", codes, reasons) if codes else empty_rejects()
    return TelemetryBatch(valid, rejected)


_COORDINATES = ("src_topic", "src_partition", "src_offset", "src_timestamp")


def with_cost(frame: pl.DataFrame, pricing: dict[str, Any]) -> pl.DataFrame:
    """Add ``model_cost_usd`` from per-model prices (USD per million tokens; unknown models cost 0)."""
    if frame.height == 0:
        return frame.with_columns(pl.lit(None, pl.Float64).alias("model_cost_usd"))
    models = list(pricing)
    p_in = {m: float(pricing[m].input_per_mtok) for m in models}
    p_out = {m: float(pricing[m].output_per_mtok) for m in models}
    model = pl.col("model_name")
    cost = (
        pl.col("model_input_tokens") * model.replace_strict(p_in, default=0.0, return_dtype=pl.Float64)
        + pl.col("model_output_tokens") * model.replace_strict(p_out, default=0.0, return_dtype=pl.Float64)
    ) / 1_000_000
    return frame.with_columns(cost.round(10).alias("model_cost_usd"))
