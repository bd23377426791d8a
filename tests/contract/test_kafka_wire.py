"""Both wire formats and a corrupt record through the real broker: coordinates are the record's."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from core.events import ProductScraped
from core.settings import load_settings
from streams.serde import (
    CorruptPayloadError,
    RecordContext,
    SerdeError,
    UnknownSchemaError,
    make_deserializer,
    make_serializer,
)
from tests.contract.helpers import EXAMPLES

pytestmark = pytest.mark.integration


def test_a_reading_loop_decodes_both_formats_and_reports_bad_bytes_with_their_offsets(kafka_bootstrap, make_topic) -> None:
    topic = make_topic()
    event = ProductScraped.model_validate(json.loads((EXAMPLES / "product_scraped" / "v1.json").read_text()))
    registry = load_settings(schema_registry_url=f"mock://{uuid.uuid4().hex}")
    plain = load_settings(schema_registry_url=None)
    payloads = [
        make_serializer(plain, "product_scraped", version=1)(event, RecordContext(topic)),
        b"\xc3\x01 not avro at all",
        make_serializer(registry, "product_scraped")(event, RecordContext(topic)),
        make_serializer(plain, "product_scraped")(event, RecordContext(topic))[:-4],
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for payload in payloads:
        producer.produce(topic, value=payload, key=event.asin.encode())
    assert producer.flush(30) == 0

    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"g{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    deserialize = make_deserializer(registry, "product_scraped")  # reads both formats
    records, errors = [], []
    try:
        while len(records) + len(errors) < len(payloads):
            message = consumer.poll(10)
            assert message is not None, "the broker gave back fewer records than were produced"
            assert message.error() is None
            ctx = RecordContext(message.topic(), message.partition(), message.offset())
            try:
                records.append(deserialize(message.value(), ctx))
            except SerdeError as error:
                errors.append(error)
    finally:
        consumer.close()
    assert [ProductScraped.from_avro(r).event_id for r in records] == [event.event_id, event.event_id]
    assert [(type(e), e.topic, e.partition, e.offset) for e in errors] == [
        (UnknownSchemaError, topic, 0, 1),  # "C3 01" then 8 bytes of text: a fingerprint nobody knows
        (CorruptPayloadError, topic, 0, 3),
    ]
