"""The batch transaction: one batch's rows and its next offsets, committed together or not at all.

This is what makes the consumers exactly-once in effect. :func:`commit_batch` is the
whole of it, in order:

1. **fence**: lock the batch's rows in ``consumer_offsets`` (``FOR UPDATE``). Two members
   can briefly both hold a partition during a rebalance; the second to arrive waits
   here, then sees the first one's progress;
2. **skip** records below the stored offsets: a previous owner stored them already;
3. **isolate** bad rows: the sink writes the rest in one go; when PostgreSQL rejects it
   for a data reason, the records are bisected under savepoints until each one that
   fails on its own is found (its neighbours keep their rows);
4. **store** the next offsets (``GREATEST``: never backwards because a slow member
   commits late);
5. **dead-letter** what could not be stored (bad records found while decoding, and the
   isolated ones), delivered and acknowledged *before* the commit: a crash in between
   re-delivers the batch, which may dead-letter a record twice but never loses one;
6. **commit**.

With ``known`` (the offsets the writer stored or loaded before), step 1 also checks that
PostgreSQL did not go back: ``GREATEST`` never lowers a stored offset, so one below what
this process stored means the database lost commits (a failover to a replica that had not
received them, a point-in-time restore). :class:`OffsetsWentBack` rolls the batch back and
the loop re-reads from the offsets PostgreSQL holds (docs/runbooks.md#primary-lost).

Kafka's own committed offsets are written after this, by the loop, only so that
standard lag tools see progress; after any crash the loop resumes from these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg

from core.errors import InsightsError
from streams.consumer.policy import Action, ErrorPolicy
from streams.consumer.sink import Item, Sink, Writes
from streams.dlq import DeadLetter
from streams.faults import ErrorClass, describe

TopicPartition = tuple[str, int]


class OffsetsWentBack(InsightsError):
    """PostgreSQL holds older offsets than this process stored: commits were lost (failover, restore)."""

    def __init__(self, behind: Mapping[TopicPartition, tuple[int | None, int]]) -> None:
        self.behind = dict(behind)  # (topic, partition) -> (stored now or None, stored before)
        parts = ", ".join(f"{t}[{p}] {now} < {before}" for (t, p), (now, before) in sorted(self.behind.items()))
        super().__init__(f"offsets in PostgreSQL went back: {parts}")


def went_back(
    stored: Mapping[TopicPartition, int], known: Mapping[TopicPartition, int], keys: Iterable[TopicPartition]
) -> dict[TopicPartition, tuple[int | None, int]]:
    """The partitions of ``keys`` whose stored offset is below (or lost from) what was known."""
    return {k: (stored.get(k), known[k]) for k in keys if k in known and stored.get(k, -1) < known[k]}


@dataclass
class BatchResult:
    """What a batch (or a run: the sum of its batches) did, as the operator reads it.

    Events: each consumed record is exactly one of ``stored`` (it added or changed rows),
    ``already_stored`` (it changed nothing: below the offsets PostgreSQL holds, or its
    rows were there already, e.g. a duplicate or a replay) or ``dead_letters``. Rows:
    ``inserted`` and ``updated`` as PostgreSQL answered them, over all tables; ``written``
    for a sink that cannot tell the two apart.
    """

    consumed: int = 0
    stored: int = 0
    already_stored: int = 0
    dead_letters: int = 0
    inserted: int = 0
    updated: int = 0
    written: int = 0

    def add(self, other: BatchResult) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def summary(self) -> str:
        """One sentence for the CLI's closing line and the demo."""
        rows = f"{self.inserted} rows inserted, {self.updated} updated"
        if self.written:
            rows += f", {self.written} written"
        return (
            f"{self.consumed} events: {self.stored} stored, {self.already_stored} already stored, "
            f"{self.dead_letters} dead-lettered ({rows})"
        )


@dataclass
class Batch:
    """One batch as decoded on the consumer's thread: the unit of atomicity."""

    items: list[Item[Any]]
    #: records that failed to decode or validate
    letters: list[DeadLetter]
    #: per partition of the batch, the offset after its last record
    next_offsets: dict[TopicPartition, int]
    #: per partitioned table, the partition-key timestamps the rows need
    stamps: Mapping[str, Iterable[datetime]] = field(default_factory=dict)
    #: perf_counter when the batch arrived (for the batch latency histogram)
    started: float = 0.0


@dataclass
class Committed:
    result: BatchResult
    #: rows inserted / updated / written per table
    writes: Writes
    #: every record of the batch that went to a dead-letter topic
    letters: list[DeadLetter]


class DeadLetters(Protocol):
    def deliver(self, letters: Sequence[DeadLetter]) -> None:
        """Send ``letters``; return once every one is acknowledged, raise otherwise."""
        ...


def commit_batch(
    conn: psycopg.Connection[Any],
    batch: Batch,
    *,
    sink: Sink[Any],
    group: str,
    policy: ErrorPolicy,
    dead_letters: DeadLetters,
    known: Mapping[TopicPartition, int] | None = None,
) -> Committed:
    """Store ``batch`` in one transaction (steps 1-6 of the module docstring).

    ``conn`` is in autocommit mode with no transaction open. A failure leaves nothing
    behind (no rows, no offsets): a transient one is for the caller to retry.
    """
    with conn.transaction():
        stored = stored_offsets(conn, group, batch.next_offsets, lock=True)  # 1. fence
        behind = went_back(stored, known or {}, batch.next_offsets)
        if behind:  # rolls this transaction back; the loop rewinds
            raise OffsetsWentBack(behind)

        def fresh(topic: str, partition: int, offset: int) -> bool:  # 2. skip
            return offset >= stored.get((topic, partition), -1)

        todo = [i for i in batch.items if fresh(i.topic, i.partition, i.offset)]
        letters = [d for d in batch.letters if fresh(d.topic, d.partition, d.offset)]
        fresh_letters = len(letters)
        writes, rejected = _write_isolating(conn, sink, todo, policy)  # 3. isolate
        _save_offsets(conn, group, batch.next_offsets)  # 4. store offsets (the rows are in)
        letters += [
            DeadLetter(error_class, describe(exc), item.topic, item.partition, item.offset,
                       item.timestamp_ms, item.key, item.value)
            for item, exc, error_class in rejected
        ]
        if letters:  # 5. dead-letter
            dead_letters.deliver(letters)
    # 6. committed: leaving the block without an exception commits
    consumed = len(batch.items) + len(batch.letters)
    # below the stored offsets (a previous owner stored them), or written and changing nothing
    already = (len(batch.items) - len(todo)) + (len(batch.letters) - fresh_letters) + writes.already_stored
    result = BatchResult(
        consumed=consumed,
        stored=len(todo) - len(rejected) - writes.already_stored,
        already_stored=already,
        dead_letters=len(letters),
        inserted=sum(writes.inserted.values()),
        updated=sum(writes.updated.values()),
        written=sum(writes.written.values()),
    )
    return Committed(result, writes, letters)


def _write_isolating(
    conn: psycopg.Connection[Any], sink: Sink[Any], items: Sequence[Item[Any]], policy: ErrorPolicy
) -> tuple[Writes, list[tuple[Item[Any], BaseException, ErrorClass]]]:
    """Write ``items`` inside the caller's transaction; return rows per table and the rejects.

    The batch is written in one statement set; when PostgreSQL rejects it for a data
    reason, it is split in halves under savepoints and each half retried, down to single
    records. k bad records among n cost about k*log2(n) extra writes, and a batch with
    none costs one savepoint.
    """
    writes = Writes()
    rejected: list[tuple[Item[Any], BaseException, ErrorClass]] = []

    def attempt(chunk: Sequence[Item[Any]]) -> None:
        if not chunk:
            return
        try:
            with conn.transaction():  # a savepoint inside the batch transaction
                counts = sink.write(conn, [item.rows for item in chunk])
        except psycopg.Error as exc:
            decision = policy(exc)
            if decision.action is not Action.DEAD_LETTER or decision.error_class is None:
                raise  # transient or unknown: the whole batch is retried or the loop stops
            if len(chunk) == 1:
                rejected.append((chunk[0], exc, decision.error_class))
                return
            middle = len(chunk) // 2
            attempt(chunk[:middle])
            attempt(chunk[middle:])
            return
        writes.add(Writes.of(counts))  # a chunk rolled back to its savepoint counts nothing

    attempt(items)
    return writes, rejected


# --- offsets in PostgreSQL ---------------------------------------------------------------

_LOAD = """
SELECT o.topic, o.partition, o.next_offset
FROM consumer_offsets AS o
JOIN unnest(%(topics)s::text[], %(partitions)s::int[]) AS w(topic, partition)
  ON o.topic = w.topic AND o.partition = w.partition
WHERE o.consumer_group = %(group)s
"""

# FOR UPDATE: the fence of step 1
_LOCK = _LOAD + " FOR UPDATE OF o"

# GREATEST: an offset never moves backwards because a slow member commits late
_SAVE = """
INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset, updated_at)
SELECT %(group)s, w.topic, w.partition, w.next_offset, now()
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[])
  AS w(topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()
"""


def _params(group: str, keys: Iterable[TopicPartition]) -> dict[str, object]:
    keys = list(keys)
    return {"group": group, "topics": [t for t, _ in keys], "partitions": [p for _, p in keys]}


def stored_offsets(
    conn: psycopg.Connection[Any], group: str, keys: Iterable[TopicPartition], lock: bool = False
) -> dict[TopicPartition, int]:
    """Stored next offsets for ``keys`` (missing keys: never stored)."""
    rows = conn.execute(_LOCK if lock else _LOAD, _params(group, keys)).fetchall()
    return {(topic, partition): next_offset for topic, partition, next_offset in rows}


def _save_offsets(conn: psycopg.Connection[Any], group: str, next_offsets: Mapping[TopicPartition, int]) -> None:
    if not next_offsets:
        return
    params = _params(group, next_offsets)
    params["offsets"] = list(next_offsets.values())
    conn.execute(_SAVE, params)
