"""The optional transaction metadata topic: BEGIN and END (with event counts per table) per transaction."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from core.settings import Settings
from streams.topics import cdc_transactions_topic
from tests.cdc.conftest import running_reader

pytestmark = pytest.mark.integration


def _records(settings: Settings, count: int, timeout: float = 60.0) -> list[tuple[bytes, dict[str, Any]]]:
    topic = cdc_transactions_topic(settings).name
    consumer = Consumer(settings.kafka.client_config(**{"group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                assert not msg.error(), msg.error()
                out.append((msg.key(), json.loads(msg.value())))
    finally:
        consumer.close()
    return out


def test_transaction_topic_has_begin_and_end_with_counts(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    settings = cdc_settings.replace(cdc_transaction_topic=True)
    q = lambda text: sql.SQL(text).format(s=sql.Identifier(cdc_schema))  # noqa: E731
    with running_reader(settings) as reader:
        with pg.transaction():
            pg.execute(q("INSERT INTO {s}.products (asin, title) SELECT 'T' || g, 't' FROM generate_series(1, 3) g"))
            pg.execute(q("INSERT INTO {s}.product_snapshots (id, asin, scraped_at) VALUES (1, 'T1', '2024-01-02')"))
        pg.execute(q("UPDATE {s}.products SET title = 'u' WHERE asin = 'T2'"))
        time.sleep(2.5)  # heartbeat transactions (every second here) carry no change: no records
        got = _records(settings, 4)
        assert reader.delivered == 5  # metadata records are not counted as changes
    assert [v["status"] for _, v in got] == ["BEGIN", "END", "BEGIN", "END"]
    first_begin, first_end, second_begin, second_end = (v for _, v in got)
    assert first_begin["xid"] == first_end["xid"] != second_end["xid"]
    assert got[0][0] == json.dumps({"xid": first_begin["xid"]}).encode()
    assert first_end["event_count"] == 4 and second_end["event_count"] == 1
    assert sorted((d["data_collection"], d["event_count"]) for d in first_end["data_collections"]) == [
        (f"{cdc_schema}.product_snapshots", 1), (f"{cdc_schema}.products", 3),
    ]
    assert first_end["commit_lsn"] < second_end["commit_lsn"] and first_end["end_lsn"] > first_end["commit_lsn"] - 1
    assert len(_records(settings, 5, timeout=3)) == 4  # nothing else: heartbeats stayed silent
