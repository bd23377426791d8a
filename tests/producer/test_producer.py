"""EventProducer and publish() against the real broker: every record lands, failures are loud."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Consumer

from insights.generate.run import Plan, publish, topic_for
from streams.admin import ensure_topics
from streams.producer import DeliveryError, EventProducer
from streams.serde import make_deserializer
from streams.topics import event_topics

pytestmark = pytest.mark.integration


def _consume_all(bootstrap: str, topic: str, group: str, expected: int, timeout_s: float = 60):
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    got = []
    try:
        deadline = datetime.now() + timedelta(seconds=timeout_s)
        while len(got) < expected and datetime.now() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                got.append(msg)
        # nothing more than expected
        extra = consumer.consume(num_messages=10, timeout=2.0)
        got.extend(m for m in extra if m.error() is None)
    finally:
        consumer.close()
    return got


def test_every_record_is_delivered_and_counted(settings, make_topic, consumer_group):
    topic = make_topic(partitions=3)
    with EventProducer(settings) as producer:
        for i in range(2000):
            producer.produce_event(topic, f"k{i % 17}", f"v{i}".encode(), headers=[("n", str(i))])
    assert producer.stats.delivered == producer.stats.produced == 2000
    assert sum(producer.stats.per_partition[topic].values()) == 2000
    got = _consume_all(settings.kafka.bootstrap_servers, topic, consumer_group, 2000)
    assert sorted(m.value() for m in got) == sorted(f"v{i}".encode() for i in range(2000))
    # per key order is kept (idempotent producer, one partition per key)
    by_key = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(int(m.value()[1:]))
    assert all(v == sorted(v) for v in by_key.values())


def test_a_small_queue_blocks_instead_of_dropping(settings, make_topic, consumer_group):
    topic = make_topic()
    producer = EventProducer(settings, **{"queue.buffering.max.messages": 50})
    for i in range(1000):  # 20x the queue: BufferError must be absorbed
        producer.produce_event(topic, None, b"x" * 100)
    assert producer.flush().delivered == 1000


def test_undeliverable_records_raise_at_flush(settings):
    producer = EventProducer(settings, **{"message.timeout.ms": 2000})
    producer.produce_event(f"{settings.kafka.topic_prefix}.does-not-exist", b"k", b"v")  # auto-create is off
    with pytest.raises(DeliveryError) as caught:
        producer.flush(30)
    assert caught.value.failed == 1


def test_publish_sends_plan_with_exact_counts(settings, consumer_group):
    ensure_topics(settings, event_topics(settings))
    plan = Plan(
        "scrape", products=20, events=600, seed=4, duplicates=0.1, out_of_order=0.2,
        start=datetime.now(timezone.utc) - timedelta(days=2), span=timedelta(days=1),
    )
    summary = publish(settings, plan)
    assert summary.events == 600 and summary.duplicates > 0 and summary.reordered > 0
    assert sum(summary.partitions.values()) == summary.records
    topic = topic_for(settings, "scrape").name
    got = _consume_all(settings.kafka.bootstrap_servers, topic, consumer_group, summary.records)
    assert len(got) == summary.records
    read = make_deserializer(settings, "product_scraped")
    ids = Counter(read(m.value(), None)["event_id"] for m in got)
    assert len(ids) == 600 and sum(ids.values()) - 600 == summary.duplicates
    assert all(m.key().decode() == read(m.value(), None)["asin"] for m in got[:50])
