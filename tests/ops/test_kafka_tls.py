"""Kafka TLS listener of a private local broker (INSIGHTS_STACK_KAFKA_SSL_PORT), certificates
from the stack CA: the project's admin client, producer and consumer loop work over it with
INSIGHTS_KAFKA_SECURITY_PROTOCOL=SSL, and a plaintext client cannot talk to it."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from core.settings import Settings, load_settings
from insights.stack.kafka import LocalKafka
from streams.admin import ensure_topics
from streams.topics import event_topics
from tests.consumers.conftest import produce, read_topic
from tests.consumers.events import scrape
from tests.ops.conftest import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def tls_kafka() -> Iterator[tuple[LocalKafka, Settings]]:
    root = Path(tempfile.mkdtemp(prefix="insights-kafka-tls-"))
    base = free_ports(3)
    settings = load_settings(stack_dir=root, stack_kafka_port=base, stack_kafka_controller_port=base + 1,
                             stack_kafka_ssl_port=base + 2, metrics_port=0)
    kafka = LocalKafka(settings)
    try:
        kafka.up(wait=180)
        yield kafka, settings.replace(
            kafka_bootstrap_servers=kafka.ssl_bootstrap, kafka_security_protocol="SSL",
            kafka_ssl_ca_location=str(kafka.ca_file), topic_prefix=f"tls{uuid.uuid4().hex[:8]}",
        )
    finally:
        kafka.down()
        shutil.rmtree(root, ignore_errors=True)


def test_admin_producer_and_consumer_work_over_tls(tls_kafka: tuple[LocalKafka, Settings]) -> None:
    _, settings = tls_kafka
    assert settings.kafka.client_config()["security.protocol"] == "SSL"
    specs = event_topics(settings, partitions=1)
    ensure_topics(settings, specs)  # the admin client
    topic = settings.kafka.topic("events.product_scraped")
    events = [scrape(n, 0) for n in range(5)]
    produce(settings, topic, "product_scraped", events)  # the project's serializer + producer config
    assert len(read_topic(settings, topic, expect=5)) == 5  # a consumer


def test_a_plaintext_client_cannot_use_the_tls_listener(tls_kafka: tuple[LocalKafka, Settings]) -> None:
    kafka, _ = tls_kafka
    admin = AdminClient({"bootstrap.servers": kafka.ssl_bootstrap, "security.protocol": "PLAINTEXT",
                         "socket.timeout.ms": 3000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=8)
    # and a TLS client that does not trust the stack CA is refused too
    untrusting = AdminClient({"bootstrap.servers": kafka.ssl_bootstrap, "security.protocol": "SSL",
                              "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt", "socket.timeout.ms": 3000})
    with pytest.raises(KafkaException):
        untrusting.list_topics(timeout=8)
