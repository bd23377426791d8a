"""The single-object header: CRC-64-AVRO fingerprints as the Avro specification defines them."""

from __future__ import annotations

import avro.schema

from core.paths import SCHEMAS_DIR
from core.settings import load_settings
from streams.serde.framing import confluent_header, single_object_header
from streams.serde.store import crc64_fingerprint, load_store


def test_fingerprint_of_int_is_the_specs_value_little_endian() -> None:
    # the Java reference implementation's parsingFingerprint64("int")
    assert crc64_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_fingerprint_agrees_with_the_avro_package_when_no_logical_type_is_involved() -> None:
    schema = {"type": "record", "name": "a.R", "doc": "ignored", "fields": [{"name": "x", "type": ["null", "long"], "default": None}]}
    import json

    assert crc64_fingerprint(schema) == avro.schema.parse(json.dumps(schema)).fingerprint("CRC-64-AVRO")


def test_every_local_version_has_a_distinct_fingerprint() -> None:
    store = load_store(SCHEMAS_DIR)
    prints = [v.fingerprint for s in store.subjects.values() for v in s.versions]
    assert len(prints) == len(set(prints))


def test_headers() -> None:
    assert single_object_header(bytes(range(8))) == b"\xc3\x01" + bytes(range(8))
    assert confluent_header(258) == b"\x00\x00\x00\x01\x02"
