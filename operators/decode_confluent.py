"""Confluent's wire format: byte ``0``, the writer schema's 4-byte big-endian registry id,
then the binary Avro datum (what confluent_kafka's ``AvroSerializer`` and Kafka Connect's
``AvroConverter`` write).

The writer schema comes from the schema registry (:mod:`driftline.schemas.registry`,
cached); the datum is resolved against the project's own schema as reader schema, so
producers may add fields (ignored) or drop fields that have a default (filled in).
Any failure raises :class:`ConfluentUndecodable` with a reason code from
:data:`CONFLUENT_REASONS`; the decode stage turns it into a dead letter.

>>> decode_confluent(b"\\x00\\x00\\x00\\x00\\x07\\x02", None, "text_event")
Traceback (most recent call last):
...
driftline.operators.decode_confluent.ConfluentUndecodable: no_schema_registry
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader
from fastavro.read import SchemaResolutionError

from driftline.schemas import load_schema
from driftline.schemas.registry import REGISTRY_REASONS, RegistryError, SchemaRegistry

CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_LEN = 5

CONFLUENT_REASONS: dict[str, str] = {
    **REGISTRY_REASONS,
    "truncated_confluent": "the Confluent-framed payload ends before its datum is complete",
    "incompatible_schema": "the writer schema from the registry cannot be read as the project's schema (a field without default is missing or has another type)",
}


class ConfluentUndecodable(Exception):
    """A Confluent-framed payload that cannot be decoded; ``code`` is one of
    :data:`CONFLUENT_REASONS` (or ``invalid_utf8`` / ``bad_avro`` of the decode stage)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def decode_confluent(value: bytes, registry: SchemaRegistry | None, reader: str) -> dict[str, Any]:
    """The record in a Confluent-framed ``value``, read as the project's schema ``reader``."""
    if registry is None:
        raise ConfluentUndecodable("no_schema_registry")
    if len(value) < CONFLUENT_HEADER_LEN:
        raise ConfluentUndecodable("truncated_confluent", f"{len(value)} bytes, the header needs {CONFLUENT_HEADER_LEN}")
    schema_id = int.from_bytes(value[1:CONFLUENT_HEADER_LEN], "big")
    try:
        writer = registry.writer_schema(schema_id)
    except RegistryError as exc:
        raise ConfluentUndecodable(exc.code, exc.detail) from None
    buf = io.BytesIO(value)
    buf.seek(CONFLUENT_HEADER_LEN)
    try:
        record = schemaless_reader(buf, writer, load_schema(reader))
    except SchemaResolutionError as exc:
        raise ConfluentUndecodable("incompatible_schema", f"schema id {schema_id}: {str(exc)[:160]}") from None
    except EOFError:
        raise ConfluentUndecodable("truncated_confluent", f"schema id {schema_id}: the datum ends early") from None
    except UnicodeDecodeError:
        raise ConfluentUndecodable("invalid_utf8", "an Avro string is not valid UTF-8") from None
    except Exception as exc:  # fastavro raises assorted errors on corrupt data
        raise ConfluentUndecodable("bad_avro", f"schema id {schema_id}: {type(exc).__name__}") from None
    if buf.tell() != len(value):
        raise ConfluentUndecodable("bad_avro", f"schema id {schema_id}: trailing bytes after the datum")
    return record


__all__ = ["CONFLUENT_HEADER_LEN", "CONFLUENT_MAGIC", "CONFLUENT_REASONS", "ConfluentUndecodable", "decode_confluent"]
