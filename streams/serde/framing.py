"""The two wire formats' headers, as constants and tiny pure functions.

* Avro single-object encoding: ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO
  fingerprint (little-endian), then the Avro binary body. No server needed.
* Confluent wire format: ``00`` + the registry's 4-byte big-endian schema id, then the body.
"""

from __future__ import annotations

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_LEN = 5


def single_object_header(fingerprint: bytes) -> bytes:
    if len(fingerprint) != 8:
        raise ValueError("a CRC-64-AVRO fingerprint has 8 bytes")
    return SINGLE_OBJECT_MAGIC + fingerprint


def confluent_header(schema_id: int) -> bytes:
    return bytes((CONFLUENT_MAGIC,)) + schema_id.to_bytes(4, "big", signed=True)
