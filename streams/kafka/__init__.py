"""Kafka plumbing shared by every layer above: client profiles, built in one place."""

from streams.kafka.clients import (
    LIBRDKAFKA_LOGGER,
    admin_client,
    batch_fetch,
    consumer_config,
    producer_config,
    routed,
)

__all__ = ["LIBRDKAFKA_LOGGER", "admin_client", "batch_fetch", "consumer_config", "producer_config", "routed"]
