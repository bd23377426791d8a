"""Generated events round-trip through both wire formats, and across versions both ways.

The registry path uses confluent-kafka's own in-memory mock registry (``mock://``): no
Confluent-compatible registry can be installed on this project's machines (see
streams/serde/registry.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings as hsettings

from core.events import MODELS, ProductScraped
from core.settings import load_settings
from streams.serde import RecordContext, make_deserializer, make_serializer
from streams.serde.registry import registry_client
from tests.contract.helpers import repo_store, store_with
from tests.contract.strategies import EVENTS, product_scraped

PLAIN = load_settings(schema_registry_url=None)
FAST = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _registry_settings():
    url = f"mock://{uuid.uuid4().hex}"
    return load_settings(schema_registry_url=url)


@pytest.mark.parametrize("subject", sorted(EVENTS))
def test_generated_events_round_trip_single_object(subject: str) -> None:
    serialize = make_serializer(PLAIN, subject)
    deserialize = make_deserializer(PLAIN, subject)

    @FAST
    @given(EVENTS[subject])
    def check(event) -> None:
        data = serialize(event, RecordContext("t"))
        assert data[:2] == b"\xc3\x01"
        assert MODELS[subject].from_avro(deserialize(data, RecordContext("t", 0, 1))) == event

    check()


@pytest.mark.parametrize("subject", sorted(EVENTS))
def test_generated_events_round_trip_registry_wire_format(subject: str) -> None:
    settings = _registry_settings()
    serialize = make_serializer(settings, subject)
    deserialize = make_deserializer(settings, subject)
    ctx = SerializationContext(f"topic-{subject}", MessageField.VALUE)

    @FAST
    @given(EVENTS[subject])
    def check(event) -> None:
        data = serialize(event, ctx)
        assert data[0] == 0
        assert MODELS[subject].from_avro(deserialize(data, ctx)) == event

    check()
    # the serde shares one client per URL; the subject is named after the topic
    assert registry_client(settings.kafka.schema_registry_url).get_subjects() == [f"topic-{subject}-value"]


V2_ONLY = {"currency", "is_prime_eligible"}


@pytest.mark.parametrize("wire", ["single-object", "registry"])
def test_v1_data_is_read_by_v2_code(wire: str) -> None:
    settings = PLAIN if wire == "single-object" else _registry_settings()
    write_v1 = make_serializer(settings, "product_scraped", version=1)
    read_latest = make_deserializer(settings, "product_scraped")

    @FAST
    @given(product_scraped)
    def check(event: ProductScraped) -> None:
        record = read_latest(write_v1(event, RecordContext("scrapes")), RecordContext("scrapes", 0, 0))
        assert record["currency"] is None and record["is_prime_eligible"] is None
        expected = event.model_copy(update={"currency": None, "is_prime_eligible": None})
        assert ProductScraped.from_avro(record) == expected

    check()


@pytest.mark.parametrize("wire", ["single-object", "registry"])
def test_v2_data_is_read_by_v1_code(wire: str) -> None:
    settings = PLAIN if wire == "single-object" else _registry_settings()
    write_v2 = make_serializer(settings, "product_scraped")  # new code: latest = v2
    read_v1 = make_deserializer(settings, "product_scraped", reader_version=1)  # old code
    v1_fields = {f["name"] for f in repo_store().subject("product_scraped").version(1).raw["fields"]}

    @FAST
    @given(product_scraped)
    def check(event: ProductScraped) -> None:
        record = read_v1(write_v2(event, RecordContext("scrapes")), RecordContext("scrapes", 0, 0))
        assert set(record) == v1_fields
        assert ProductScraped.from_avro(record) == event.model_copy(update={"currency": None, "is_prime_eligible": None})

    check()


def test_registry_lets_a_deployment_that_knows_only_v1_read_v2_data(tmp_path: Path) -> None:
    settings = _registry_settings()
    old_store = store_with(tmp_path, "product_scraped", [1])
    data = make_serializer(settings, "product_scraped")(next_event(), RecordContext("scrapes"))
    record = make_deserializer(settings, "product_scraped", store=old_store)(data, RecordContext("scrapes", 0, 7))
    assert "currency" not in record and record["asin"] == next_event().asin


def test_single_object_data_of_a_schema_a_deployment_lacks_is_a_typed_error(tmp_path: Path) -> None:
    from streams.serde import UnknownSchemaError

    old_store = store_with(tmp_path, "product_scraped", [1])
    data = make_serializer(PLAIN, "product_scraped")(next_event(), None)
    with pytest.raises(UnknownSchemaError) as caught:
        make_deserializer(PLAIN, "product_scraped", store=old_store)(data, RecordContext("scrapes", 2, 9))
    assert (caught.value.topic, caught.value.partition, caught.value.offset) == ("scrapes", 2, 9)


def next_event() -> ProductScraped:
    import json

    from tests.contract.helpers import EXAMPLES

    return ProductScraped.model_validate(json.loads((EXAMPLES / "product_scraped" / "v2.json").read_text()))
