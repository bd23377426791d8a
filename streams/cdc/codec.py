"""Encoding the envelope: the one place that knows how change events become bytes.

The project's shared serde (``streams.serde``) resolves subjects under ``schemas/avro/``
and frames CDC events like every other event; the fast path writes the same bytes (the
serde's header, then the body) and is checked against the serde on a probe.
"""

from __future__ import annotations

from core.paths import SCHEMAS_DIR

import io
import json
from collections.abc import Callable
from typing import Any

import fastavro

from core.settings import Settings
from streams.cdc.avro_body import encode_body
from streams.serde import make_deserializer, make_serializer

SUBJECT = "cdc_change"
VERSION = 1

Encoder = Callable[[dict[str, Any]], bytes]
Decoder = Callable[[bytes], dict[str, Any]]


def envelope_schema(settings: Settings) -> dict[str, Any]:
    path = SCHEMAS_DIR / SUBJECT / f"v{VERSION}.avsc"
    return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))


PROBE: dict[str, Any] = {
    "op": "u",
    "before": {"id": 7},
    "after": {"id": -7, "t": "é", "b": True, "f": False, "x": 1.5, "n": None, "big": 2**62},
    "unchanged_toast": ["body"],
    "key_columns": ["id"],
    "source": {"lsn": 1, "commit_lsn": 2**40, "xid": 3, "commit_time": 1_700_000_000_000_000,
               "schema": "public", "table": "t", "snapshot": False},
}


def make_encoder(settings: Settings) -> Encoder:
    """The fast envelope writer, framed like the shared serde frames it, verified on a probe."""
    schema = envelope_schema(settings)
    write = fastavro.schemaless_writer

    def generic(value: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        write(buf, schema, value)
        return buf.getvalue()

    serialize = make_serializer(settings, SUBJECT, VERSION)
    framed: Encoder = lambda value: serialize(value, None)  # noqa: E731
    whole, body = framed(PROBE), generic(PROBE)
    if not whole.endswith(body):
        return framed  # a framing we do not understand: the generic path, slower but right
    header = whole[: len(whole) - len(body)]
    if header + encode_body(PROBE) != framed(PROBE):
        return framed

    def fast(value: dict[str, Any]) -> bytes:
        return header + encode_body(value)

    # the reader writes bodies itself (streams.cdc.rowcodec) when it knows the framing
    fast.avro_header = header  # type: ignore[attr-defined]
    return fast


def make_decoder(settings: Settings) -> Decoder:
    deserialize = make_deserializer(settings, SUBJECT)
    return lambda data: deserialize(data, None)
