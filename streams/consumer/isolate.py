"""Find the records whose own rows violate a constraint, without dropping their neighbours.

The batch is written in one statement set; when PostgreSQL rejects it for a data
reason, the batch is split in halves under savepoints and each half retried, down to
single records. Good records keep their rows; each record that fails on its own is
returned for the dead-letter topic. k bad records among n cost about k*log2(n) extra
writes, and a batch with none costs one savepoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from streams.consumer.policy import Action, ErrorPolicy
from streams.consumer.sink import Item, Sink
from streams.faults import ErrorClass


@dataclass
class WriteOutcome:
    rows: Counter[str] = field(default_factory=Counter)
    rejected: list[tuple[Item[Any], BaseException, ErrorClass]] = field(default_factory=list)
    writes: int = 0


def write_isolating(
    conn: psycopg.Connection, sink: Sink[Any], items: Sequence[Item[Any]], policy: ErrorPolicy
) -> WriteOutcome:
    """Write ``items`` inside the caller's transaction; isolate records that fail alone."""
    outcome = WriteOutcome()

    def attempt(chunk: Sequence[Item[Any]]) -> None:
        if not chunk:
            return
        outcome.writes += 1
        try:
            with conn.transaction():  # a savepoint inside the batch transaction
                counts = sink.write(conn, [item.rows for item in chunk])
        except psycopg.Error as exc:
            decision = policy(exc)
            if decision.action is not Action.DEAD_LETTER or decision.error_class is None:
                raise  # transient or unknown: the whole batch is retried or the loop stops
            if len(chunk) == 1:
                outcome.rejected.append((chunk[0], exc, decision.error_class))
                return
            middle = len(chunk) // 2
            attempt(chunk[:middle])
            attempt(chunk[middle:])
            return
        outcome.rows.update(counts)

    attempt(items)
    return outcome
