"""The sink contract (tests/consumers/sink_contract.py) for the scrape sink."""

from __future__ import annotations

from decimal import Decimal

import pytest

from consumers.spec import topic_for_subject
from core.settings import Settings
from streams.serde import RecordContext, make_serializer
from tests.consumers.events import scrape
from tests.consumers.sink_contract import Poison, Record, SinkContract

pytestmark = pytest.mark.integration

PRODUCTS, SCRAPES = 12, 4


class TestScrapeContract(SinkContract):
    sink = "scrape"
    tables = ("products", "product_snapshots", "product_features")
    volatile = {
        # first_tracked_at: the scrape a product was first *stored* from, which depends on
        # how the scrapes were batched (merge keeps a batch's newest), not on the data
        "products": frozenset({"first_tracked_at", "last_updated_at", "created_at", "updated_at"}),
        "product_snapshots": frozenset({"id", "created_at"}),
        "product_features": frozenset({"id", "created_at"}),
    }

    def records(self, settings: Settings) -> list[Record]:
        topic = topic_for_subject(settings, "product_scraped")
        serialize = make_serializer(settings, "product_scraped")
        return [
            Record(topic, event.asin.encode(), serialize(event, RecordContext(topic)))
            for seq in range(SCRAPES) for n in range(PRODUCTS)
            for event in [scrape(n, seq, features=2)]
        ]

    def poison(self, settings: Settings) -> list[Poison]:
        topic = topic_for_subject(settings, "product_scraped")
        serialize = make_serializer(settings, "product_scraped")
        bad_rating = scrape(1, 99).to_avro()
        bad_rating["rating"] = Decimal("7.00")  # encodes as Avro decimal(3,2), breaks the 0-5 rule
        key = scrape(1, 0).asin.encode()  # on the partition of a good product's scrapes
        return [
            Poison(Record(topic, key, b'{"json": "not avro"}'), "corrupt_payload", "magic"),
            Poison(Record(topic, key, serialize(bad_rating, RecordContext(topic))), "validation", "rating"),
        ]
