"""Kafka plumbing shared by every layer above: client profiles, built in one place."""

from streams.kafka.clients import admin_client, consumer_config, producer_config

__all__ = ["admin_client", "consumer_config", "producer_config"]
