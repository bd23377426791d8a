"""Apply ``ddl/NNNN_name.sql`` in order, once each, recorded with a checksum.

Each file runs in its own transaction (or, if its first line is
``-- insights:no-transaction``, statement by statement in autocommit, for things like
``CREATE INDEX CONCURRENTLY``). A file that was applied and then changed is refused:
migrations are history, a fix is a new file. After migrating, the partitions around now are
created so the database is ready for consumers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors

from core.errors import PrivilegeError
from core.paths import DDL_DIR, REPO_ROOT
from insights.db import partitions
from insights.db.errors import MigrationError
from streams.pg import connect


NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
NO_TRANSACTION = "-- insights:no-transaction"
# one lock id per purpose: migrators of one database queue instead of racing
MIGRATION_LOCK_KEY = 0x1A51_6475_0001

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text        PRIMARY KEY,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION)


def discover(ddl_dir: Path = DDL_DIR) -> list[Migration]:
    """The migration files in order; refuses misnamed files and duplicate numbers."""
    if not ddl_dir.is_dir():
        raise MigrationError(f"no migrations directory at {ddl_dir}")
    found: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(ddl_dir.glob("*.sql")):
        match = NAME_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_words.sql")
        number = match.group(1)
        if number in numbers:
            raise MigrationError(f"{path.name} and {numbers[number]} share the number {number}")
        numbers[number] = path.name
        found.append(Migration(path.name, path, path.read_text(encoding="utf-8")))
    return found


def plan(applied: dict[str, str], migrations: Iterable[Migration]) -> list[Migration]:
    """What is left to apply, given ``{version: checksum}`` already recorded (pure)."""
    pending: list[Migration] = []
    known = {m.name for m in migrations}
    missing = sorted(set(applied) - known)
    if missing:
        raise MigrationError(
            f"applied migration {missing[0]} is no longer in ddl/; restore it (migrations are history)"
        )
    for migration in migrations:
        recorded = applied.get(migration.name)
        if recorded is None:
            pending.append(migration)
        elif recorded != migration.checksum:
            raise MigrationError(
                f"ddl/{migration.name} changed after it was applied "
                f"(checksum {recorded[:12]} in the database, {migration.checksum[:12]} on disk); "
                "write a new migration instead of editing an applied one"
            )
    return pending


def _applied(conn: psycopg.Connection) -> dict[str, str]:
    exists = conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {version: checksum for version, checksum in rows}


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    record = (
        "INSERT INTO schema_migrations (version, checksum, duration_ms) "
        "VALUES (%s, %s, (extract(epoch FROM clock_timestamp() - %s::timestamptz) * 1000)::int)"
    )
    try:
        if migration.transactional:
            with conn.transaction():
                started = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
                conn.execute(migration.sql.encode("utf-8"))  # simple protocol: many statements
                conn.execute(record, (migration.name, migration.checksum, started))
        else:
            started = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute(record, (migration.name, migration.checksum, started))
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"ddl/{migration.name} failed: {detail}") from exc


def migrate(conninfo: str, *, dry_run: bool = False, ddl_dir: Path | None = None) -> list[str]:
    """Apply what is pending; return the file names applied (or that would be, if dry_run)."""
    migrations = discover(ddl_dir or DDL_DIR)
    try:
        conn = connect(conninfo, "db-migrate")
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
    with conn:
        try:
            if dry_run:
                return [m.name for m in plan(_applied(conn), migrations)]
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                conn.execute(CREATE_LEDGER)
                pending = plan(_applied(conn), migrations)
                for migration in pending:
                    _apply(conn, migration)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            # ready for consumers: the partitions around now exist (a no-op when they do)
            partitions.ensure(conn)
        except (psycopg.Error, MigrationError) as exc:
            denied = insufficient_privilege(exc)
            if denied is None:
                raise
            raise owner_needed(conn, "db migrate", denied) from exc
    return [m.name for m in pending]


def insufficient_privilege(exc: BaseException) -> pg_errors.InsufficientPrivilege | None:
    """The InsufficientPrivilege behind ``exc``, when the database layer wrapped one."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, pg_errors.InsufficientPrivilege):
            return current
        current = current.__cause__
    return None


def schema_owner(conn: psycopg.Connection) -> tuple[str, str]:
    """(the connected role, the role that owns the migrated tables).

    The owner of ``schema_migrations`` ran the migrations, so it owns every table they
    created; before any migration, the database's owner is the one who can start.
    """
    row = conn.execute(
        """
        SELECT current_user::text,
               coalesce((SELECT pg_get_userbyid(c.relowner) FROM pg_class c
                         WHERE c.oid = to_regclass('public.schema_migrations')),
                        (SELECT pg_get_userbyid(d.datdba) FROM pg_database d
                         WHERE d.datname = current_database()))
        """
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def owner_needed(conn: psycopg.Connection, what: str, exc: psycopg.Error) -> PrivilegeError:
    """The one line for a command that only the tables' owner may run, naming that role."""
    primary = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    try:
        current, owner = schema_owner(conn)
    except psycopg.Error:  # the connection is gone too: say what is known
        return PrivilegeError(f"{what}: {primary}: run it as the role that owns the tables (INSIGHTS_PG_DSN)")
    return PrivilegeError(
        f"{what}: {primary} for role {current!r}: it must run as {owner!r}, the role that owns the "
        f"tables; set INSIGHTS_PG_DSN to connect as {owner!r}"
    )
