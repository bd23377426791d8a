"""``insights db maintain``: what the seed's ``run_maintenance_tasks()`` meant, made to run.

The seed put ``VACUUM`` and ``REINDEX ... CONCURRENTLY`` inside a plpgsql function, where
PostgreSQL refuses both (they cannot run in a transaction block), and scheduled it through
pg_cron, which is not installed. Here every statement is sent on its own from an autocommit
connection, in an order that is safe while consumers write:

1. partitions: split the DEFAULT partitions and create those ahead (short locks, retried);
2. prune partitions past retention (detach + drop, short locks, retried), archived first when
   ``INSIGHTS_PG_RETENTION_ARCHIVE_DIR`` is set, recorded in ``retention_runs``;
3. ``REFRESH MATERIALIZED VIEW CONCURRENTLY``: readers of the view are never blocked;
4. ``VACUUM (ANALYZE)`` of the two big tables the seed names (no lock that blocks writes);
5. ``ANALYZE`` of the partitioned parents: autovacuum analyzes partitions but never their
   parents, so without this the planner has no statistics for queries on the parents.

The seed's weekly ``REINDEX INDEX CONCURRENTLY idx_snapshots_asin_time`` is not repeated:
rebuilding an index on a schedule, bloated or not, doubles its I/O for nothing, and that
index no longer exists (the unique (asin, scraped_at) key replaces it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from insights.db import partitions, retention
from insights.db.errors import DatabaseError
from insights.db.migrations import insufficient_privilege, owner_needed
from streams.pg import connect

VACUUMED = ("product_snapshots", "competitive_analyses")


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float
    detail: str


def _ensure(conn: psycopg.Connection) -> str:
    created = partitions.ensure(conn)
    return f"{len(created)} partition(s) created" + (f": {', '.join(created)}" if created else "")


def _prune(conn: psycopg.Connection, archive_dir: Path | None = None) -> str:
    # a recorded retention run (retention_runs), archived first when the setting says so
    done = retention.run(conn, runner="maintain", archive_dir=archive_dir)
    gone = done.dropped
    return (f"{len(gone)} partition(s) dropped" + (f": {', '.join(p.partition for p in gone)}" if gone else "")
            + (f"; {done.rows_archived:,} row(s) archived to {archive_dir}" if archive_dir and gone else ""))


def _refresh(conn: psycopg.Connection) -> str:
    conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY product_summary_view")
    return "product_summary_view refreshed concurrently"


def _vacuum(conn: psycopg.Connection) -> str:
    for table in VACUUMED:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
    return f"vacuumed and analyzed {', '.join(VACUUMED)}"


def _analyze_parents(conn: psycopg.Connection) -> str:
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'p' AND NOT c.relispartition AND n.nspname = 'public' ORDER BY 2"
    ).fetchall()
    for nspname, relname in rows:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(nspname, relname)))
    return f"analyzed {len(rows)} partitioned table(s)"


STEPS: tuple[tuple[str, Callable[[psycopg.Connection], str]], ...] = (
    ("ensure partitions", _ensure),
    ("prune partitions", _prune),
    ("refresh summaries", _refresh),
    ("vacuum", _vacuum),
    ("analyze parents", _analyze_parents),
)


def _steps(archive_dir: Path | None) -> list[tuple[str, Callable[[psycopg.Connection], str]]]:
    return [(name, functools.partial(_prune, archive_dir=archive_dir) if step is _prune else step)
            for name, step in STEPS]


def maintain(
    conninfo: str, *, on_step: Callable[[str], None] | None = None, archive_dir: Path | None = None
) -> list[StepResult]:
    """Run every step to the end; the first failure stops and says which step failed.
    ``archive_dir`` (INSIGHTS_PG_RETENTION_ARCHIVE_DIR): the prune step archives each
    partition's rows there before dropping it."""
    results: list[StepResult] = []
    try:
        conn = connect(conninfo, "db-maintain")
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
    with conn:
        for name, step in _steps(archive_dir):
            if on_step is not None:
                on_step(name)
            started = time.monotonic()
            try:
                detail = step(conn)
            except (psycopg.Error, DatabaseError) as exc:
                denied = insufficient_privilege(exc)
                if denied is not None:  # REFRESH, VACUUM and partition changes need the owner
                    raise owner_needed(conn, f"db maintain ({name})", denied) from exc
                if not isinstance(exc, psycopg.Error):
                    raise
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DatabaseError(f"maintenance step '{name}' failed: {first}") from exc
            results.append(StepResult(name, time.monotonic() - started, detail))
    return results
