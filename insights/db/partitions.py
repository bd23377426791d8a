"""Partitions: create ahead and on demand, split the DEFAULT partition, prune by retention.

The decisions live in the database (``ddl/0013_partition_management.sql``): the policy per
table, the catalog view of partition bounds (``pg_inherits`` + ``pg_get_expr``), and the
``SECURITY DEFINER`` functions that create partitions, so that the least-privilege ingest
role can create the partition its rows need without owning any table. This module calls
them in short transactions of their own and prunes by bounds.

No row is ever lost or rejected for want of a partition:

* consumers call :func:`ensure_partitions_for` before their batch transaction, so their rows
  land in a proper partition even for 2019 or 2031;
* any other writer's out-of-range row lands in the table's DEFAULT partition, and
  :func:`ensure` (``insights db partitions ensure``, also run by ``migrate`` and ``maintain``)
  moves such rows into the partitions they belong to, inside one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from core.errors import ConfigError
from insights.db.errors import PartitionError

# on-demand creation is what the consumers need, so it lives below them in streams.pg
from streams.pg.partitions import (
    LOCK_ATTEMPTS,
    LOCK_TIMEOUT,
    ensure_partitions_for,
    in_own_transaction,
    one_line,
    utc_days,
)



@dataclass(frozen=True)
class Policy:
    parent: str
    period: str  # 'month' | 'day'
    premake: int
    retention: str | None  # an interval as PostgreSQL prints it, None = keep forever


@dataclass(frozen=True)
class PartitionInfo:
    parent: str
    partition: str
    is_default: bool
    lower: datetime | None
    upper: datetime | None
    rows_estimate: int


@dataclass(frozen=True)
class Pruned:
    parent: str
    partition: str
    lower: datetime
    upper: datetime
    #: the planner's row count (pg_class.reltuples), to show what a prune would drop
    rows_estimate: int = 0


#: ``(steps done, steps in all, what was just done)`` for ensure and prune
StepProgress = Callable[[int, int, str], None]

#: the words that mean "no retention" for :func:`parse_retention`
KEEP_FOREVER = ("none", "forever", "keep")


def policies(conn: psycopg.Connection) -> list[Policy]:
    rows = conn.execute(
        "SELECT parent::text, period, premake, retention::text FROM partition_policy ORDER BY 1"
    ).fetchall()
    return [Policy(*row) for row in rows]





def ensure(
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
    months_ahead: int | None = None,
    days_ahead: int | None = None,
    on_progress: StepProgress | None = None,
) -> list[str]:
    """For every partitioned table: split its DEFAULT partition, then create partitions from
    one period back to the policy's periods ahead (or ``months_ahead`` / ``days_ahead``)."""
    created: list[str] = []
    found = policies(conn)
    total = 2 * len(found)
    for i, policy in enumerate(found):
        ahead = months_ahead if policy.period == "month" else days_ahead
        created += in_own_transaction(
            conn, "SELECT p::text FROM split_default_partition(%s::regclass) AS p", (policy.parent,)
        )
        if on_progress is not None:
            on_progress(2 * i + 1, total, f"{policy.parent}: DEFAULT split")
        created += in_own_transaction(
            conn,
            "SELECT p::text FROM premake_partitions(%s::regclass, coalesce(%s::timestamptz, now()), %s::int) AS p",
            (policy.parent, now, ahead),
        )
        if on_progress is not None:
            on_progress(2 * i + 2, total, f"{policy.parent}: partitions ahead")
    return created


# The policy may be overridden for one table (``db partitions policy`` shows what a new
# retention would drop before it is set): %(table)s NULL = the stored policy as it is.
PRUNABLE = """
WITH policy AS (
    SELECT parent, period,
           CASE WHEN parent = %(table)s::regclass THEN %(retention)s::interval ELSE retention END AS retention
    FROM partition_policy
)
SELECT c.parent::text, c."partition"::text, c.lower_bound, c.upper_bound,
       pn.nspname, pr.relname, n.nspname, r.relname, greatest(r.reltuples, 0)::bigint
FROM partition_catalog c
JOIN policy p ON p.parent = c.parent
JOIN pg_class r ON r.oid = c."partition"
JOIN pg_namespace n ON n.oid = r.relnamespace
JOIN pg_class pr ON pr.oid = c.parent
JOIN pg_namespace pn ON pn.oid = pr.relnamespace
WHERE NOT c.is_default
  AND p.retention IS NOT NULL
  AND c.upper_bound <= (timezone('UTC', date_trunc(p.period, %(now)s::timestamptz, 'UTC')) - p.retention)
                       AT TIME ZONE 'UTC'
ORDER BY 1, 3
"""


def prunable(
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
    table: str | None = None,
    retention: str | None = None,
) -> list[Pruned]:
    """What :func:`prune` would drop at ``now``; with ``table``, as if its retention were
    ``retention`` (None = keep forever). Changes nothing."""
    at = now or datetime.now(UTC)
    rows = conn.execute(PRUNABLE, {"now": at, "table": table, "retention": retention}).fetchall()
    return [Pruned(parent, partition, lower, upper, int(estimate))
            for parent, partition, lower, upper, _pn, _pr, _n, _r, estimate in rows]


def prune(
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    only: Collection[str] | None = None,
    on_progress: StepProgress | None = None,
    before_drop: Callable[[psycopg.Connection, Pruned, str, str], None] | None = None,
) -> list[Pruned]:
    """Drop the partitions wholly older than their table's retention, chosen by bounds.

    Each goes in its own transaction: DETACH, then DROP without CASCADE, so an object that
    depends on the partition makes the prune fail loudly instead of vanishing with it.
    ``only``: drop no partition outside these names, i.e. what an operator was shown and
    confirmed (a partition that became prunable since then waits for the next prune).
    ``before_drop(conn, item, schema, name)`` runs first for each partition (the archive of
    ``prune --archive``); when it raises, that partition and the ones after it stay.
    """
    at = now or datetime.now(UTC)
    rows = conn.execute(PRUNABLE, {"now": at, "table": None, "retention": None}).fetchall()
    if only is not None:
        rows = [row for row in rows if row[1] in only]
    gone: list[Pruned] = []
    for parent, partition, lower, upper, parent_nsp, parent_rel, nspname, relname, estimate in rows:
        item = Pruned(parent, partition, lower, upper, int(estimate))
        if not dry_run:
            if before_drop is not None:
                before_drop(conn, item, nspname, relname)
            target = sql.Identifier(nspname, relname)
            parent_name = sql.Identifier(parent_nsp, parent_rel)
            statements = [
                sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent_name, target),
                sql.SQL("DROP TABLE {}").format(target),
            ]
            _run_locked(conn, statements, what=f"prune {partition}")
        gone.append(item)
        if on_progress is not None:
            on_progress(len(gone), len(rows), partition)
    return gone


def parse_retention(conn: psycopg.Connection, text: str) -> str | None:
    """An operator's retention (``12 months``, ``90 days``, ``none``) as PostgreSQL prints it;
    None for keep-forever. PostgreSQL parses it, so what is accepted is what the policy holds."""
    if text.strip().lower() in KEEP_FOREVER:
        return None
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT %s::interval::text, %s::interval > interval '0'", (text, text)
            ).fetchone()
    except psycopg.DataError as exc:  # SQLSTATE class 22: not an interval
        raise ConfigError(
            f"--retention {text!r}: {one_line(exc)}; give an interval such as '12 months' or '90 days', or 'none'"
        ) from None
    assert row is not None
    if not row[1]:
        raise ConfigError(f"--retention {text!r}: must be longer than zero, or 'none' to keep everything")
    return str(row[0])


def set_policy(
    conn: psycopg.Connection,
    table: str,
    *,
    retention: str | None = None,
    keep_forever: bool = False,
    premake: int | None = None,
) -> Policy:
    """Change one table's retention (``keep_forever``: none) and/or premake; return the new policy."""
    changes: dict[str, object] = {}
    if keep_forever:
        changes["retention"] = None
    elif retention is not None:
        changes["retention"] = retention
    if premake is not None:
        changes["premake"] = premake
    if not changes:
        raise ConfigError("nothing to change: give --retention and/or --premake")
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column)) for column in changes
    )
    statement = sql.SQL(
        "UPDATE partition_policy SET {} WHERE parent = %(table)s::regclass "
        "RETURNING parent::text, period, premake, retention::text"
    ).format(assignments)
    with conn.transaction():
        row = conn.execute(statement, {**changes, "table": table}).fetchone()
    if row is None:
        raise ConfigError(f"{table} has no partition policy")
    return Policy(*row)


def _run_locked(conn: psycopg.Connection, statements: list[sql.Composed], *, what: str) -> None:
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
                for statement in statements:
                    conn.execute(statement)
            return
        except pg_errors.LockNotAvailable:
            if attempt == LOCK_ATTEMPTS:
                raise PartitionError(f"{what}: table lock not granted after {attempt} attempts") from None
            time.sleep(0.2 * attempt)
        except psycopg.Error as exc:
            raise PartitionError(f"{what}: {one_line(exc)}") from exc


STATUS = """
SELECT c.parent::text, c."partition"::text, c.is_default, c.lower_bound, c.upper_bound,
       greatest(r.reltuples, 0)::bigint, n.nspname, r.relname
FROM partition_catalog c
JOIN partition_policy p ON p.parent = c.parent
JOIN pg_class r ON r.oid = c."partition"
JOIN pg_namespace n ON n.oid = r.relnamespace
ORDER BY 1, c.is_default DESC, 4
"""


def status(conn: psycopg.Connection) -> list[PartitionInfo]:
    """Every managed partition with its bounds; DEFAULT partitions carry an exact row count
    (they should be empty: rows there are waiting for ``ensure``)."""
    infos: list[PartitionInfo] = []
    for parent, partition, is_default, lower, upper, estimate, nspname, relname in conn.execute(
        STATUS
    ).fetchall():
        if is_default:
            estimate = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(nspname, relname))
            ).fetchone()[0]  # type: ignore[index]
        infos.append(PartitionInfo(parent, partition, is_default, lower, upper, int(estimate)))
    return infos
