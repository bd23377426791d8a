"""Encoding the envelope: the one place that knows how change events become bytes.

The project's shared serde (``streams.serde``) resolves subjects under ``schemas/avro/``;
when it is installed it is used, so CDC events are framed like every other event.
Until then (or without it) the envelope is written as plain Avro binary with fastavro
against ``schemas/avro/cdc_change/v<version>.avsc``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import fastavro

from insights.settings import Settings

SUBJECT = "cdc_change"
VERSION = 1

Encoder = Callable[[dict[str, Any]], bytes]
Decoder = Callable[[bytes], dict[str, Any]]


def envelope_schema(settings: Settings) -> dict[str, Any]:
    path = settings.schemas_dir / SUBJECT / f"v{VERSION}.avsc"
    return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))


def _shared_serde() -> Any | None:
    try:
        import streams.serde as serde
    except ImportError:
        return None
    if hasattr(serde, "make_serializer") and hasattr(serde, "make_deserializer"):
        return serde
    return None


def make_encoder(settings: Settings) -> Encoder:
    serde = _shared_serde()
    if serde is not None:
        serialize = serde.make_serializer(settings, SUBJECT, VERSION)
        return lambda value: serialize(value, None)
    schema = envelope_schema(settings)
    write = fastavro.schemaless_writer

    def encode(value: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        write(buf, schema, value)
        return buf.getvalue()

    return encode


def make_decoder(settings: Settings) -> Decoder:
    serde = _shared_serde()
    if serde is not None:
        deserialize = serde.make_deserializer(settings, SUBJECT)
        return lambda data: deserialize(data, None)
    schema = envelope_schema(settings)
    return lambda data: fastavro.schemaless_reader(io.BytesIO(data), schema)
