"""Avro schemas of driftline's input contracts, shipped as package data.

>>> schema = load_schema("text_event")
>>> schema["name"]
'dev.driftline.events.TextEvent'
"""

from __future__ import annotations

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
