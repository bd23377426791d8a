"""What a sink is: the part of a consumer that knows one event type and its tables.

The loop (``streams.consumer.loop``) owns Kafka, offsets, retries and dead letters;
a sink owns only two things, kept apart on purpose:

* ``prepare``: pure, per record: validate the decoded Avro dict and map it to the rows
  it produces. No I/O, so it is unit-tested without a database and cannot be slowed
  by one.
* ``write``: set-based I/O for many prepared records at once, inside the transaction
  the loop opened (it must not commit). It must be idempotent: writing the same
  records again changes nothing, because Kafka delivers at least once. It says what
  PostgreSQL did (:class:`Writes`: rows inserted and updated per table, and how many
  of the records were already stored), so the operator's counters tell the truth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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

    def write(self, conn: psycopg.Connection, items: Sequence[R]) -> Writes | Mapping[str, int]:
        """Write ``items`` inside the open transaction; say what PostgreSQL did.

        A plain mapping (rows per table) is accepted from a sink that cannot tell an
        insert from an update; its rows are then reported as ``written``.
        """
        ...


@dataclass
class Writes:
    """What one ``write`` did, from PostgreSQL's answers (``RETURNING``, row counts)."""

    #: rows added, per table
    inserted: Counter[str] = field(default_factory=Counter)
    #: rows changed, per table (an upsert's update, a counter bumped)
    updated: Counter[str] = field(default_factory=Counter)
    #: rows written where the sink cannot tell an insert from an update, per table
    written: Counter[str] = field(default_factory=Counter)
    #: records whose rows were all stored already: they changed nothing (no-ops)
    already_stored: int = 0

    def count(self, table: str, inserted: int, updated: int) -> None:
        if inserted:
            self.inserted[table] += inserted
        if updated:
            self.updated[table] += updated

    def add(self, other: Writes) -> None:
        self.inserted.update(other.inserted)
        self.updated.update(other.updated)
        self.written.update(other.written)
        self.already_stored += other.already_stored

    @classmethod
    def of(cls, answer: Writes | Mapping[str, int]) -> Writes:
        if isinstance(answer, Writes):
            return answer
        return cls(written=Counter({t: n for t, n in answer.items() if n}))


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
