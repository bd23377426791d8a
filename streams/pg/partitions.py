"""Time partitions on demand: create the ones a batch of rows needs, before the rows come.

The decisions live in the database (``ddl/0013_partition_management.sql``): the policy per
table and the ``SECURITY DEFINER`` function ``ensure_partitions`` that lets the
least-privilege ingest role create a partition without owning the table. This module
calls it in short transactions of its own, so the batch transaction that follows never
holds a partition lock. ``insights.db.partitions`` builds the rest of partition
management (ahead of time, DEFAULT split, prune) on the same helpers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from streams.pg.errors import PartitionError

#: how long a partition change may wait for the table lock before trying again
LOCK_TIMEOUT = "5s"
LOCK_ATTEMPTS = 5


def utc_days(timestamps: Iterable[datetime]) -> list[datetime]:
    """One representative per UTC day: both periods are whole days, so this loses nothing
    and keeps a 5000-row batch to a handful of values."""
    days: set[datetime] = set()
    for ts in timestamps:
        if ts.tzinfo is None:
            raise PartitionError(f"timestamp {ts.isoformat()} has no time zone; partitions are UTC")
        days.add(ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0))
    return sorted(days)


def in_own_transaction(conn: psycopg.Connection[Any], query: sql.Composable | str, params: tuple[Any, ...]) -> list[str]:
    """Run a partition function in a short transaction, retrying when the table lock is busy."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
                return [row[0] for row in conn.execute(query, params).fetchall()]  # type: ignore[arg-type]
        except pg_errors.LockNotAvailable:
            if attempt == LOCK_ATTEMPTS:
                raise PartitionError(
                    f"table lock not granted within {LOCK_TIMEOUT} after {attempt} attempts"
                ) from None
            time.sleep(0.2 * attempt)
        except psycopg.Error as exc:
            raise PartitionError(one_line(exc)) from exc
    raise AssertionError("unreachable")


def ensure_partitions_for(conn: psycopg.Connection[Any], table: str, timestamps: Iterable[datetime]) -> list[str]:
    """Create the partitions of ``table`` that rows dated ``timestamps`` need; return their names.

    Call it in its own short transaction before the batch transaction (with an idle
    connection this function opens and commits one). Cheap when nothing is missing; safe when
    several processes ask for the same partition at once.
    """
    days = utc_days(timestamps)
    if not days:
        return []
    return in_own_transaction(
        conn,
        "SELECT p::text FROM ensure_partitions(%s::regclass, %s::timestamptz[]) AS p",
        (table, days),
    )


class PartitionsOnDemand:
    """What one process has ensured already, so that a steady stream costs no query at all.

    Only one timestamp per (table, day) is passed on, and days this process ensured
    before are skipped.
    """

    def __init__(self) -> None:
        self._ensured: set[tuple[str, date]] = set()

    def ensure(self, conn: psycopg.Connection[Any], stamps: Mapping[str, Iterable[datetime]]) -> None:
        """Create the partitions ``stamps`` (per table, its rows' partition-key timestamps) need."""
        wanted: dict[str, list[datetime]] = {}
        for table, values in stamps.items():
            for ts in values:
                key = (table, ts.date())
                if key not in self._ensured:
                    self._ensured.add(key)
                    wanted.setdefault(table, []).append(ts)
        if not wanted:
            return
        try:
            for table, values in wanted.items():
                ensure_partitions_for(conn, table, values)  # commits its own short transaction
        except Exception:
            # not ensured after all: ask again on the retry
            for table, values in wanted.items():
                self._ensured.difference_update((table, ts.date()) for ts in values)
            raise


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
