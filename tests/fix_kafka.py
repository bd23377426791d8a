"""Kafka fixtures: the session's bootstrap address and per-test uuid topic names and groups."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.fix_services import Services, unavailable


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    try:
        admin.list_topics(timeout=15)
    except Exception as exc:
        unavailable(f"Kafka at {services.kafka_bootstrap} does not answer: {exc}")
    return services.kafka_bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A fresh prefix per test: every topic the test makes is its own."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def consumer_group() -> str:
    return f"g{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create a uuid-named topic (deleted after the test)."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(name: str | None = None, partitions: int = 1) -> str:
        topic = name or f"test-{uuid.uuid4().hex}"
        futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        futures[topic].result(timeout=30)
        created.append(topic)
        return topic

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            try:
                future.result(timeout=30)
            except Exception:
                pass
