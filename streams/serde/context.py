"""Where a record lives: the context every serializer and deserializer is called with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordContext:
    """A record's Kafka coordinates; partition and offset are known only when consuming."""

    topic: str
    partition: int | None = None
    offset: int | None = None


def coordinates(ctx: Any) -> tuple[str | None, int | None, int | None]:
    """(topic, partition, offset) of a RecordContext, a confluent SerializationContext or None."""
    if ctx is None:
        return None, None, None
    return (
        getattr(ctx, "topic", None),
        getattr(ctx, "partition", None),
        getattr(ctx, "offset", None),
    )


def error_at(cls: type[Exception], message: str, ctx: Any) -> Exception:
    """An instance of a SerdeError subclass carrying the coordinates of ``ctx``."""
    topic, partition, offset = coordinates(ctx)
    return cls(message, topic=topic, partition=partition, offset=offset)
