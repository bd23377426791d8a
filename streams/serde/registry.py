"""The Confluent-compatible schema registry client, one per URL per process.

Sharing one client per URL keeps confluent-kafka's id/schema caches warm across every
serializer and deserializer, and makes ``mock://`` registries (confluent-kafka's own
in-memory mock, used by the tests) behave as one registry inside a process.

The client package (``confluent_kafka.schema_registry``: its HTTP stack, ~22 MB of RSS and
0.1 s of start-up) is imported only by a process that uses a registry: ``registry_client``,
``registry_error`` and ``registry_schema`` import it on first use. A consumer of the
single-object encoding (the default) never loads it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from confluent_kafka.schema_registry import SchemaRegistryClient

    with _lock:
        client = _clients.get(url)
        if client is None:
            client = SchemaRegistryClient.new_client({"url": url, "timeout": REGISTRY_TIMEOUT_S})
            _clients[url] = client
        return client


def registry_error() -> type[SchemaRegistryError]:
    """The registry client's error class (for ``except registry_error() as exc:``, evaluated
    only when something was raised)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    return SchemaRegistryError


def registry_schema(text: str, schema_type: str = "AVRO") -> Any:
    """A ``confluent_kafka.schema_registry.Schema`` to register."""
    from confluent_kafka.schema_registry import Schema

    return Schema(text, schema_type)


def is_not_found(exc: SchemaRegistryError) -> bool:
    return getattr(exc, "http_status_code", None) == NOT_FOUND_HTTP


def value_subject_name(topic: str) -> str:
    """Subject naming by topic name (Confluent's TopicNameStrategy) for record values."""
    return f"{topic}-value"
