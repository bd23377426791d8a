"""A 1,000,000-row transaction: every row arrives, the slot confirms past it only afterwards."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from core.settings import Settings
from streams.cdc import slot as slots
from streams.cdc.lsn import parse_lsn
from streams.topics import cdc_topic_name
from tests.cdc.conftest import running_reader, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1_000_000


@pytest.mark.timeout(600)
def test_one_million_row_transaction(cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any) -> None:
    snaps = sql.Identifier(cdc_schema, "product_snapshots")
    with running_reader(cdc_settings) as reader:
        pg.execute(
            sql.SQL(
                "INSERT INTO {} (id, asin, price, scraped_at) "
                "SELECT g, 'B' || (g %% 1000), g / 100.0, '2024-01-01'::timestamptz + g * interval '1 second' "
                "FROM generate_series(1, %s) g"
            ).format(snaps),
            (ROWS,),
        )
        end = parse_lsn(pg.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        wait_for(lambda: reader.tracker.confirmed >= end, timeout=480, what="the big transaction to be confirmed")
    with slots.connect(cdc_settings.pg) as conn:
        status = slots.slot_status(conn, cdc_settings.cdc.slot_name)
    assert status is not None and parse_lsn(status.confirmed_flush_lsn or "0/0") >= end

    topic = cdc_topic_name(cdc_settings, "product_snapshots", cdc_schema)
    consumer = Consumer(cdc_settings.kafka.client_config(**{"group.id": f"big-{time.time()}", "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
        keys: set[bytes] = set()
        deadline = time.monotonic() + 120
        while len(keys) < ROWS and time.monotonic() < deadline:
            for msg in consumer.consume(50_000, timeout=0.5):
                assert msg.error() is None
                keys.add(msg.key())
        assert len(keys) == ROWS  # every row, each at least once
    finally:
        consumer.close()
    last = events("product_snapshots")
    sample = last.read(1)[0][2]
    assert sample["op"] == "c" and sample["source"]["commit_lsn"] < end
