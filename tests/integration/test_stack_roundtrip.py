"""The foundation's promise: a real message through the real broker, a real query on the real Postgres."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.integration


def test_produce_and_consume_one_message(kafka_bootstrap, make_topic, consumer_group):
    topic = make_topic()
    payload = uuid.uuid4().bytes
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=b"k", value=payload)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": consumer_group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    try:
        got = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got = msg
                break
        assert got is not None, "no message came back from the broker"
        assert got.value() == payload
        assert got.key() == b"k"
        assert got.topic() == topic
    finally:
        consumer.close()


def test_query_on_real_postgres(pg):
    row = pg.execute("SELECT current_setting('wal_level'), version()").fetchone()
    assert row[0] == "logical"
    assert "PostgreSQL 15" in row[1]


def test_each_test_has_its_own_database(pg_dsn, pg_template):
    with psycopg.connect(pg_dsn) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
    assert name.startswith("test_") and name != pg_template
