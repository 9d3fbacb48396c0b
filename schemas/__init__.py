"""Avro schemas of driftline's input contracts, shipped as package data.

>>> schema = load_schema("text_event")
>>> schema["name"]
'dev.driftline.events.TextEvent'
>>> encode_single_object("model_call", {"call_id": "c", "event_time": 0, "service": "s", "model": "m",
...     "input_tokens": 1, "output_tokens": 2, "latency_ms": 3.0})[:2] == SINGLE_OBJECT_MAGIC
True
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_NAMES = ("text_event", "model_call")


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed (fastavro) schema ``name`` (file ``schemas/<name>.avsc``)."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files(__package__).joinpath(f"{name}.avsc").read_text("utf-8")
    return fastavro.parse_schema(json.loads(text))


@lru_cache(maxsize=None)
def schema_fingerprint(name: str) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint used by single-object encoding."""
    canonical = to_parsing_canonical_form(load_schema(name))
    hexdigest = fingerprint(canonical, "CRC-64-AVRO")  # fastavro returns it little-endian
    return bytes.fromhex(hexdigest)


SINGLE_OBJECT_MAGIC = b"\xc3\x01"
"""The two marker bytes of Avro single-object encoding."""


def encode_single_object(name: str, record: dict[str, Any]) -> bytes:
    """Avro single-object encoding of ``record`` with schema ``name``: the marker, the
    schema fingerprint, then the binary datum (no registry needed to read it back)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(name), record)
    return SINGLE_OBJECT_MAGIC + schema_fingerprint(name) + buf.getvalue()
