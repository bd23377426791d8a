"""Avro serde for the event topics: both wire formats, schemas parsed once.

``make_serializer`` writes the Confluent wire format when a schema registry is
configured (``INSIGHTS_SCHEMA_REGISTRY_URL``), Avro single-object encoding against the
local ``schemas/avro/`` otherwise. ``make_deserializer`` reads either, resolving the
writer's schema to the subject's latest version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.paths import SCHEMAS_DIR
from core.settings import Settings
from streams.serde.codec import (
    AvroDeserializer,
    Deserializer,
    RegistrySerializer,
    Serializer,
    SingleObjectSerializer,
)
from streams.serde.context import RecordContext
from streams.serde.errors import (
    CorruptPayloadError,
    EncodeError,
    IncompatibleSchemaError,
    RegistryUnavailableError,
    SerdeError,
    UnknownSchemaError,
)
from streams.serde.registry import registry_client
from streams.serde.store import SchemaStore, load_store
from streams.topics import event_topics

if TYPE_CHECKING:  # the client package loads only where a registry is used (streams/serde/registry.py)
    from confluent_kafka.schema_registry import SchemaRegistryClient


def _registry(settings: Settings, registry: SchemaRegistryClient | None) -> SchemaRegistryClient | None:
    if registry is not None:
        return registry
    if settings.kafka.schema_registry_url:
        return registry_client(settings.kafka.schema_registry_url)
    return None


def _default_topic(settings: Settings, subject: str) -> str | None:
    """The topic whose values follow ``subject``, used when a caller passes no context."""
    for spec in event_topics(settings):
        if spec.value_subject == subject:
            return spec.name
    return None


def make_serializer(
    settings: Settings,
    subject: str,
    version: int | None = None,
    *,
    store: SchemaStore | None = None,
    registry: SchemaRegistryClient | None = None,
) -> Serializer:
    """``(record or event model, ctx) -> bytes`` for one version of ``subject`` (latest by default)."""
    store = store or load_store(SCHEMAS_DIR)
    found = store.subject(subject)
    chosen = found.latest if version is None else found.version(version)
    client = _registry(settings, registry)
    if client is None:
        return SingleObjectSerializer(chosen)
    return RegistrySerializer(chosen, client, _default_topic(settings, subject))


def make_deserializer(
    settings: Settings,
    subject: str,
    *,
    store: SchemaStore | None = None,
    registry: SchemaRegistryClient | None = None,
    reader_version: int | None = None,
) -> Deserializer:
    """``(bytes, ctx) -> dict`` in the latest version of ``subject`` (or ``reader_version``,
    for code pinned to an older model); accepts both wire formats."""
    store = store or load_store(SCHEMAS_DIR)
    return AvroDeserializer(store, subject, _registry(settings, registry), reader_version)


__all__ = [
    "CorruptPayloadError",
    "EncodeError",
    "IncompatibleSchemaError",
    "RecordContext",
    "RegistryUnavailableError",
    "SerdeError",
    "UnknownSchemaError",
    "make_deserializer",
    "make_serializer",
]
