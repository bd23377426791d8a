"""What a sink is: the part of a consumer that knows one event type and its tables.

The loop (``streams.consumer.loop``) owns Kafka, offsets, retries and dead letters;
a sink owns only two things, kept apart on purpose:

* ``prepare``: pure, per record: validate the decoded Avro dict and map it to the rows
  it produces. No I/O, so it is unit-tested without a database and cannot be slowed
  by one.
* ``write``: set-based I/O for many prepared records at once, inside the transaction
  the loop opened (it must not commit). It must be idempotent: writing the same
  records again changes nothing, because Kafka delivers at least once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import psycopg

R = TypeVar("R")

#: ``(value bytes, context) -> decoded record``
Decoder = Callable[[bytes, Any], dict[str, Any]]


class Sink(Protocol[R]):
    #: short name, used in metrics, logs and the consumer group's client id
    name: str
    #: Avro subject of the topic's values (a folder under schemas/avro/)
    subject: str

    def prepare(self, record: dict[str, Any]) -> R:
        """Validate one decoded record and map it to rows; raise on a bad record."""
        ...

    def timestamps(self, items: Sequence[R]) -> Mapping[str, Iterable[datetime]]:
        """Per partitioned table, the partition-key timestamps ``items`` will write."""
        ...

    def write(self, conn: psycopg.Connection, items: Sequence[R]) -> Mapping[str, int]:
        """Write ``items`` inside the open transaction; return rows written per table."""
        ...


@dataclass(slots=True)
class Item(Generic[R]):
    """A record that decoded and validated, with where it came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    rows: R


def _no_context(topic: str, partition: int, offset: int) -> None:
    return None


@dataclass(frozen=True)
class Source:
    """What one loop reads: its topics (one consumer group, one batch across them) and how."""

    topics: tuple[str, ...]
    decoder: Decoder
    #: ``(topic, partition, offset) -> the decoder's context``
    context: Callable[[str, int, int], Any] = _no_context
    #: what to tell the operator when a topic does not exist
    missing_hint: str = "create it with `insights topics create`"
    #: run once the topics are known to exist, before the first record (e.g. create DLQ topics)
    before_consuming: Callable[[], None] | None = None
