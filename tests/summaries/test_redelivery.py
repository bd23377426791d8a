"""Hand-made change events on the CDC topics: what a crashed reader's redelivery can look like.

No replication here: envelopes are written with the reader's own encoder, so the test
can put a stale insert after its delete (a reader that crashed before confirming
re-sends from its last confirmed position) and bytes that are no event at all.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer

from core.settings import Settings
from streams.admin import ensure_topics
from streams.cdc.envelope import make_encoder
from streams.dlq import H_ERROR_CLASS, H_OFFSET, headers_dict
from streams.topics import cdc_topic_name, cdc_topics, dlq_name
from tests.summaries.conftest import consume_all, everything

pytestmark = pytest.mark.integration

ASIN = "B0REDELIV1"
T1, T2 = "2099-01-01T00:00:00+00:00", "2099-01-02T00:00:00+00:00"  # always inside the window


def event(table: str, op: str, commit_lsn: int, lsn: int, *, before: dict[str, Any] | None = None,
          after: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "op": op, "before": before, "after": after, "unchanged_toast": [], "key_columns": [],
        "source": {"lsn": lsn, "commit_lsn": commit_lsn, "xid": commit_lsn, "commit_time": 1_700_000_000_000_000,
                   "schema": "public", "table": table, "snapshot": False},
    }


def snapshot_row(sid: int, at: str, price: str) -> dict[str, Any]:
    return {"id": sid, "scraped_at": at, "asin": ASIN, "price": price, "rating": "4.00", "review_count": 3,
            "bsr_data": '{"Toys": 5}', "availability_status": "In Stock"}


def send(settings: Settings, table: str, records: list[tuple[bytes | None, dict[str, Any] | bytes]]) -> None:
    encode = make_encoder(settings)
    producer = Producer(settings.kafka.client_config(**{"enable.idempotence": True}))
    topic = cdc_topic_name(settings, table)
    for key, value in records:
        # every record on partition 0: a key's changes keep their order, as the reader's do
        producer.produce(topic, value if isinstance(value, bytes) else encode(value), key, partition=0)
    assert producer.flush(30) == 0


def dead_letters(settings: Settings, table: str, expect: int) -> list[dict[str, str]]:
    from confluent_kafka import Consumer, TopicPartition

    topic = dlq_name(cdc_topic_name(settings, table))
    consumer = Consumer(settings.kafka.client_config(**{"group.id": f"dlq-peek-{uuid.uuid4().hex}", "enable.auto.commit": False}))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        found = []
        for _ in range(20):  # until the expected ones are there, and one more look for extras
            found += [headers_dict(m.headers()) for m in consumer.consume(100, timeout=0.5) if m.error() is None]
            if len(found) >= expect:
                found += [headers_dict(m.headers()) for m in consumer.consume(100, timeout=0.5) if m.error() is None]
                break
        return found
    finally:
        consumer.close()


def test_a_stale_redelivery_never_resurrects_a_row_and_bad_records_are_dead_lettered(
    cdc_settings: Settings, pg: psycopg.Connection
) -> None:
    ensure_topics(cdc_settings, cdc_topics(cdc_settings, ["products", "product_snapshots", "alerts"]))
    key1 = b'{"id":1,"scraped_at":"2099-01-01T00:00:00+00:00"}'
    created = event("product_snapshots", "c", 100, 2, after=snapshot_row(1, T1, "10.00"))
    send(cdc_settings, "products", [
        (b'{"asin":"B0REDELIV1"}', event("products", "c", 100, 1, after={
            "asin": ASIN, "title": "Robot", "brand": "R", "category": "Toys", "is_active": True})),
        (b"garbage", b"not avro at all"),
        (b'{"asin":null}', event("products", "c", 101, 1, after={"title": "no key"})),
    ])
    send(cdc_settings, "product_snapshots", [
        (key1, created),
        (key1, event("product_snapshots", "d", 200, 1, before={"id": 1, "scraped_at": T1})),
    ])
    consume_all(cdc_settings)
    summary = "SELECT current_price, min_price_30d, max_price_30d FROM summaries.product_summary WHERE asin = %s"
    assert pg.execute(summary, (ASIN,)).fetchone() == (None, None, None)

    # the reader crashed before confirming: the insert comes again, after its delete, in a later batch
    before = everything(pg)
    send(cdc_settings, "product_snapshots", [(key1, created)])
    stale = consume_all(cdc_settings)
    assert everything(pg) == before
    # and the counters say so: the version guard refused it, nothing inserted or updated
    assert (stale.totals.stored, stale.totals.already_stored) == (0, 1)
    assert (stale.totals.inserted, stale.totals.updated) == (0, 0)

    # a real new change still gets through
    send(cdc_settings, "product_snapshots", [
        (b'{"id":2}', event("product_snapshots", "c", 300, 1, after=snapshot_row(2, T2, "20.00")))])
    fresh = consume_all(cdc_settings)
    assert (fresh.totals.stored, fresh.totals.already_stored, fresh.totals.inserted) == (1, 0, 1)
    assert pg.execute(summary, (ASIN,)).fetchone() == (Decimal("20.00"), Decimal("20.00"), Decimal("20.00"))

    letters = dead_letters(cdc_settings, "products", expect=2)
    assert sorted((h[H_OFFSET], h[H_ERROR_CLASS]) for h in letters) == [("1", "corrupt_payload"), ("2", "validation")]


def test_sweep_forgets_what_the_source_partition_retention_drops(cdc_settings: Settings, pg: psycopg.Connection,
                                                                 pg_dsn: str) -> None:
    from consumers.summaries.store import RETENTION_MONTHS, sweep

    ensure_topics(cdc_settings, cdc_topics(cdc_settings, ["products", "product_snapshots", "alerts"]))
    old = (datetime.now(UTC) - timedelta(days=430)).isoformat()  # 14 months: before the 12-month horizon
    older_alert = (datetime.now(UTC) - timedelta(days=220)).isoformat()  # 7 months: before the 6-month horizon
    send(cdc_settings, "products", [(b"p", event("products", "c", 10, 1, after={
        "asin": ASIN, "title": "Old", "brand": None, "category": None, "is_active": True}))])
    send(cdc_settings, "product_snapshots", [(b"s", event("product_snapshots", "c", 10, 2, after=snapshot_row(1, old, "5.00")))])
    send(cdc_settings, "alerts", [(b"a", event("alerts", "c", 10, 3, after={
        "id": 1, "triggered_at": older_alert, "target_asin": ASIN, "is_read": False, "is_resolved": False}))])
    consume_all(cdc_settings)
    query = "SELECT current_price, alerts_total FROM summaries.product_summary WHERE asin = %s"
    assert pg.execute(query, (ASIN,)).fetchone() == (Decimal("5.00"), 1)

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        result = sweep(conn, retention_months=RETENTION_MONTHS)
    assert result.retired == 1
    assert pg.execute(query, (ASIN,)).fetchone() == (None, 0)
    assert pg.execute("SELECT count(*) FROM summaries.snapshots").fetchone() == (0,)
