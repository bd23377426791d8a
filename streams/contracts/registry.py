"""Register every local schema version with a Confluent-compatible registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import InsightsError
from core.settings import Settings
from streams.serde.registry import registry_error, registry_schema, value_subject_name
from streams.serde.store import SchemaStore
from streams.topics import event_topics

if TYPE_CHECKING:  # loaded where a registry is used (streams/serde/registry.py says why)
    from confluent_kafka.schema_registry import SchemaRegistryClient


class RegistrationError(InsightsError):
    """The registry refused a schema version or could not be reached."""


@dataclass(frozen=True)
class Registered:
    registry_subject: str
    local: str
    schema_id: int


def register_all(
    settings: Settings,
    store: SchemaStore,
    client: SchemaRegistryClient,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Registered]:
    """For each topic whose values follow a local subject: set the subject's compatibility
    level, then register v1..vN in order (the registry checks each against the last)."""
    from confluent_kafka.schema_registry.common.schema_registry_client import ConfigCompatibilityLevel, ServerConfig

    done: list[Registered] = []
    for spec in event_topics(settings):
        if not spec.value_subject or spec.value_subject not in store.subjects:
            continue
        subject = store.subject(spec.value_subject)
        name = value_subject_name(spec.name)
        try:
            # set_config rather than set_compatibility: the mock registry implements only this one
            client.set_config(name, ServerConfig(compatibility=ConfigCompatibilityLevel(subject.compatibility)))
            for version in subject.versions:
                progress(f"{name} <- {version.label}")
                schema_id = client.register_schema(name, registry_schema(version.text))
                done.append(Registered(name, version.label, schema_id))
        except registry_error() as exc:
            raise RegistrationError(f"registry refused {name}: {exc}") from exc
        except Exception as exc:  # connection errors from the HTTP client
            raise RegistrationError(f"registry unreachable at {settings.kafka.schema_registry_url}: {exc}") from exc
    return done
