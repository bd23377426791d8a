"""Fixtures for the consumer tests: the test's own event topics, producing, running, reading DLQs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

# the contract's asserts are in a helper module: show their operands when they fail
pytest.register_assert_rewrite("tests.consumers.sink_contract")
from confluent_kafka import Consumer, Producer

from core.settings import Settings
from consumers.registry import build_loop
from streams.consumer import ConsumerLoop
from streams.dlq import headers_dict
from streams.serde import RecordContext, make_serializer
from streams.topics import dlq_name, event_topics
from tests.consumers.pg_cluster import pg_cluster  # noqa: F401 - a fixture, registered by import
from tests.loop_thread import LoopThread


@dataclass(frozen=True)
class Topics:
    scrape: str
    alerts: str

    @property
    def scrape_dlq(self) -> str:
        return dlq_name(self.scrape)

    @property
    def alerts_dlq(self) -> str:
        return dlq_name(self.alerts)


@pytest.fixture
def make_event_topics(settings: Settings, make_topic: Callable[..., str]) -> Callable[[int], Topics]:
    """Create the declared event topics and their DLQs under this test's prefix."""

    def make(partitions: int = 3) -> Topics:
        specs = {spec.value_subject: spec.name for spec in event_topics(settings)}
        scrape, alerts = specs["product_scraped"], specs["alert_triggered"]
        for name in (scrape, alerts):
            make_topic(name=name, partitions=partitions)
            make_topic(name=dlq_name(name), partitions=1)
        return Topics(scrape, alerts)

    return make


@pytest.fixture
def topics(make_event_topics: Callable[[int], Topics]) -> Topics:
    return make_event_topics(3)


def produce(
    settings: Settings,
    topic: str,
    subject: str,
    events: Iterable[Any],
    key: Callable[[Any], bytes | None] = lambda e: str(getattr(e, "asin", None) or getattr(e, "target_asin", "") or "").encode(),
) -> int:
    """Serialize events (models, dicts, or raw ``bytes`` as poison) with the project's serde."""
    serialize = make_serializer(settings, subject)
    producer = Producer(settings.kafka.client_config(**{"linger.ms": 20, "enable.idempotence": True}))
    count = 0
    for event in events:
        if isinstance(event, tuple):  # (key, raw bytes): poison sent as is
            k, value = event
        else:
            k, value = key(event), serialize(event, RecordContext(topic))
        while True:
            try:
                producer.produce(topic, key=k, value=value)
                break
            except BufferError:
                producer.poll(0.2)
        count += 1
        producer.poll(0)
    assert producer.flush(30) == 0, "not every test event was delivered"
    return count


def run_until_idle(
    settings: Settings, sink: str, *, idle: float = 4.0, timeout: float = 120.0, **kwargs: Any
) -> ConsumerLoop:
    """Run the loop of sink ``sink`` in a thread until it saw no records for ``idle`` seconds
    (re-raises its error)."""
    loop = build_loop(settings, sink, group=settings.consumer.group, idle_exit_after=idle, **kwargs)
    running = LoopThread(loop)
    running.thread.join(timeout)
    if running.thread.is_alive():
        running.stop(30)
        raise AssertionError(f"consumer loop still running after {timeout}s")
    running.raise_failure()
    return loop


def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (stops at ``expect`` or on timeout)."""
    import time
    import uuid

    consumer = Consumer(
        settings.kafka.client_config(**{"group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                                 "enable.auto.commit": False})
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    found.append(msg)
            # keep reading a little past `expect` so that extra records are seen too
            if len(found) >= expect and time.monotonic() > deadline - timeout + 3:
                break
    finally:
        consumer.close()
    return found


def dlq_entries(settings: Settings, topic: str, expect: int) -> list[dict[str, str]]:
    return [headers_dict(m.headers()) for m in read_topic(settings, dlq_name(topic), expect)]


def count(conn: psycopg.Connection, query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def seed_rule(pg: psycopg.Connection) -> Callable[[int], None]:
    def make(rule_id: int) -> None:
        pg.execute(
            "INSERT INTO alert_rules (id, name, rule_type, target_type, target_id, conditions) "
            "VALUES (%s, %s, 'price_change', 'product', 'any', '{}')",
            (rule_id, f"rule {rule_id}"),
        )

    return make
