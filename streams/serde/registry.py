"""The Confluent-compatible schema registry client, one per URL per process.

Sharing one client per URL keeps confluent-kafka's id/schema caches warm across every
serializer and deserializer, and makes ``mock://`` registries (confluent-kafka's own
in-memory mock, used by the tests) behave as one registry inside a process.
"""

from __future__ import annotations

import threading

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

_lock = threading.Lock()
_clients: dict[str, SchemaRegistryClient] = {}

#: Confluent's error code for "schema not found" / "subject not found"
NOT_FOUND_HTTP = 404


#: seconds an HTTP request to the registry may take (connect, each read). Without it the client
#: waits forever on a registry that accepts the connection and never answers, and a CDC reader
#: blocked there outlives PostgreSQL's wal_sender_timeout; a timeout is an outage like any other
#: (retried with backoff by the callers), not a hang.
REGISTRY_TIMEOUT_S = 10


def registry_client(url: str) -> SchemaRegistryClient:
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = SchemaRegistryClient.new_client({"url": url, "timeout": REGISTRY_TIMEOUT_S})
            _clients[url] = client
        return client


def is_not_found(exc: SchemaRegistryError) -> bool:
    return getattr(exc, "http_status_code", None) == NOT_FOUND_HTTP


def value_subject_name(topic: str) -> str:
    """Subject naming by topic name (Confluent's TopicNameStrategy) for record values."""
    return f"{topic}-value"
