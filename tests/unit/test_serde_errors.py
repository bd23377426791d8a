"""Bytes a reader cannot read give typed errors with their Kafka coordinates, never anything else."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings as hsettings, strategies as st

from core.paths import SCHEMAS_DIR
from core.paths import REPO_ROOT
from core.errors import RecordError
from core.events import ProductScraped
from core.settings import load_settings
from streams.serde import (
    CorruptPayloadError,
    EncodeError,
    RecordContext,
    SerdeError,
    UnknownSchemaError,
    make_deserializer,
    make_serializer,
)
from streams.serde.store import load_store

PLAIN = load_settings(schema_registry_url=None)
EVENT = ProductScraped.model_validate(
    json.loads((REPO_ROOT / "schemas" / "avro" / "examples" / "product_scraped" / "v2.json").read_text())
)
CTX = RecordContext("insights.events.product_scraped", 3, 1234)
serialize = make_serializer(PLAIN, "product_scraped")
deserialize = make_deserializer(PLAIN, "product_scraped")
GOOD = serialize(EVENT, CTX)


def _raises(cls, data: bytes, match: str, ctx=CTX) -> SerdeError:
    with pytest.raises(cls, match=match) as caught:
        deserialize(data, ctx)
    return caught.value


def test_serde_errors_are_record_errors_with_coordinates() -> None:
    error = _raises(CorruptPayloadError, b"\x07garbage", "wrong magic byte 0x07")
    assert isinstance(error, RecordError)
    assert (error.topic, error.partition, error.offset) == ("insights.events.product_scraped", 3, 1234)
    assert "(at insights.events.product_scraped[3]@1234)" in str(error)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty payload"),
        (b"\xc3", "truncated single-object header"),
        (b"\xc3\x01\x00\x01", "truncated single-object header"),
        (b"\xc3\x02" + GOOD[2:], "wrong magic bytes c302"),
        (b"\x00\x00\x00", "truncated registry header"),
        (GOOD[:-5], "undecodable or truncated body"),
        (GOOD[:12], "undecodable or truncated body"),
        (GOOD + b"\x00\x00", "2 bytes left after the record"),
    ],
)
def test_corrupt_and_truncated_payloads(data: bytes, match: str) -> None:
    _raises(CorruptPayloadError, data, match)


def test_unknown_fingerprint() -> None:
    _raises(UnknownSchemaError, b"\xc3\x01" + b"\xee" * 8 + GOOD[10:], "unknown schema fingerprint eeeeeeeeeeeeeeee")


def test_fingerprint_of_another_subject_is_named() -> None:
    other = load_store(SCHEMAS_DIR).subject("alert_triggered").latest.fingerprint
    _raises(UnknownSchemaError, b"\xc3\x01" + other + GOOD[10:], "is alert_triggered v1, not a version of product_scraped")


def test_registry_framing_without_a_registry() -> None:
    _raises(UnknownSchemaError, b"\x00\x00\x00\x00\x07" + GOOD[10:], "no schema registry is configured")


def test_unknown_registry_id() -> None:
    settings = load_settings(schema_registry_url="mock://unknown-id-test")
    reader = make_deserializer(settings, "product_scraped")
    for _ in range(2):  # the second time comes from the negative cache, same error
        with pytest.raises(UnknownSchemaError, match="registry has no schema id 99"):
            reader(b"\x00\x00\x00\x00\x63" + GOOD[10:], CTX)


def test_confluent_serialization_context_gives_the_topic() -> None:
    ctx = SerializationContext("some.topic", MessageField.VALUE)
    with pytest.raises(CorruptPayloadError) as caught:
        deserialize(b"\x05", ctx)
    assert caught.value.topic == "some.topic" and caught.value.partition is None


def test_no_context_still_raises_the_typed_error() -> None:
    with pytest.raises(CorruptPayloadError) as caught:
        deserialize(b"\x05", None)
    assert caught.value.topic is None


def test_a_value_that_does_not_fit_the_schema_is_an_encode_error() -> None:
    record = EVENT.to_avro()
    record["review_count"] = "many"
    with pytest.raises(EncodeError, match="does not fit product_scraped v2") as caught:
        serialize(record, CTX)
    assert caught.value.topic == CTX.topic
    with pytest.raises(EncodeError):
        serialize({k: v for k, v in EVENT.to_avro().items() if k != "asin"}, CTX)


@hsettings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"\xc3\x01" + GOOD[2:10], b"\x00\x00\x00\x00\x01"]),
    body=st.binary(max_size=80) | st.builds(lambda cut, flip: bytearray(GOOD[10:cut]) + bytes([flip]), st.integers(10, len(GOOD)), st.integers(0, 255)),
)
def test_a_reading_loop_never_sees_anything_but_a_dict_or_a_serde_error(prefix: bytes, body: bytes) -> None:
    """Fuzzed bytes, with valid and invalid headers: the only outcomes are a record or a SerdeError."""
    try:
        record = deserialize(prefix + bytes(body), CTX)
    except SerdeError as error:
        assert (error.topic, error.partition, error.offset) == (CTX.topic, 3, 1234)
    else:
        assert isinstance(record, dict)
