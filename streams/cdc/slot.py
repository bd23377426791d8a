"""Publication and slot management, heartbeats, slot status and the catalog's view of a
table (ordinary SQL connections; the replication connection is :mod:`.transport`'s)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.settings import PostgresSettings
from streams.cdc.errors import CdcError, SlotLostError, SlotMissingError
from streams.cdc.pgoutput import Column, Relation
from streams.pg.connect import connect as pg_connect

HEARTBEAT_PREFIX = "insights.cdc.heartbeat"


def connect(pg: PostgresSettings, purpose: str = "cdc") -> psycopg.Connection[Any]:
    """An autocommit connection for slot and publication work, named ``insights-<purpose>``."""
    try:
        return pg_connect(pg, purpose)
    except psycopg.OperationalError as exc:
        raise CdcError(f"cannot connect to PostgreSQL: {exc}") from None


def ensure_publication(conn: psycopg.Connection[Any], name: str, schema: str, tables: tuple[str, ...]) -> bool:
    """Create the publication (via partition root) or bring its table list in line; True if created."""
    table_list = sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables)
    row = conn.execute(
        "SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (name,)
    ).fetchone()
    try:
        if row is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
                    sql.Identifier(name), table_list
                )
            )
            return True
        current = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s",
                (name, schema),
            )
        }
        if current != set(tables):
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), table_list))
        if not row[0]:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(sql.Identifier(name))
            )
    except psycopg.errors.UndefinedTable as exc:
        raise CdcError(f"cannot publish: {exc.diag.message_primary}") from None
    return False


def slot_exists(conn: psycopg.Connection[Any], slot: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


def require_slot_unless_new(conn: psycopg.Connection[Any], slot: str, publication: str) -> None:
    """Raise :class:`SlotMissingError` when the publication exists without its slot.

    Publication and slot are made together (``cdc setup``, ``cdc snapshot``) and dropped
    together (``cdc drop``): a publication alone means the slot went missing.
    """
    if slot_exists(conn, slot):
        return
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone() is None:
        return
    # the current WAL file name starts with the timeline: above 1, this server was promoted
    row = conn.execute("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int").fetchone()
    raise SlotMissingError(slot, publication, int(row[0]) if row and row[0] is not None else None)


def ensure_slot(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Create the pgoutput slot if missing; True if created."""
    if slot_exists(conn, slot):
        return False
    try:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    except psycopg.errors.DuplicateObject:
        return False
    return True


def drop(conn: psycopg.Connection[Any], slot: str, publication: str) -> list[str]:
    done: list[str] = []
    if slot_exists(conn, slot):
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        except psycopg.errors.ObjectInUse as exc:
            raise CdcError(f"cannot drop slot {slot!r}: {exc.diag.message_primary} (stop the reader first)") from None
        done.append(f"slot {slot}")
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone():
        conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)))
        done.append(f"publication {publication}")
    return done


def emit_heartbeat(conn: psycopg.Connection[Any]) -> None:
    """A transactional logical message: decoded by every slot, so an idle slot can confirm past it."""
    conn.execute("SELECT pg_logical_emit_message(true, %s, now()::text)", (HEARTBEAT_PREFIX,))


@dataclass(frozen=True)
class SlotStatus:
    slot: str
    active: bool
    active_pid: int | None
    confirmed_flush_lsn: str | None
    restart_lsn: str | None
    lag_bytes: int | None
    retained_bytes: int | None
    lag_seconds: float | None
    wal_status: str | None
    safe_wal_size: int | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def slot_status(conn: psycopg.Connection[Any], slot: str) -> SlotStatus | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """
            SELECT s.slot_name, s.active, s.active_pid,
                   s.confirmed_flush_lsn::text AS confirmed_flush_lsn, s.restart_lsn::text AS restart_lsn,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
                   extract(epoch FROM r.flush_lag)::float8 AS lag_seconds,
                   s.wal_status, s.safe_wal_size
              FROM pg_replication_slots s
              LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
             WHERE s.slot_name = %s
            """,
            (slot,),
        ).fetchone()
    if row is None:
        return None
    return SlotStatus(
        slot=row["slot_name"],
        active=row["active"],
        active_pid=row["active_pid"],
        confirmed_flush_lsn=row["confirmed_flush_lsn"],
        restart_lsn=row["restart_lsn"],
        lag_bytes=row["lag_bytes"],
        retained_bytes=row["retained_bytes"],
        lag_seconds=row["lag_seconds"],
        wal_status=row["wal_status"],
        safe_wal_size=row["safe_wal_size"],
    )


def check_not_lost(conn: psycopg.Connection[Any], slot: str) -> None:
    status = slot_status(conn, slot)
    if status is not None and status.wal_status == "lost":
        raise SlotLostError(slot, "wal_status = lost")


def table_relation(conn: psycopg.Connection[Any], schema: str, table: str) -> Relation:
    """A table as a Relation message would describe it (the key: its primary key columns)."""
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    ).fetchone()
    if row is None:
        raise CdcError(f"no table {schema}.{table}")
    oid = row[0]
    cols = conn.execute(
        """
        SELECT a.attname, a.atttypid, a.atttypmod,
               coalesce(a.attnum = ANY (i.indkey), false) AS is_key
          FROM pg_attribute a
          LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
         WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (oid,),
    ).fetchall()
    return Relation(oid, schema, table, "d", tuple(Column(n, t, m, k) for n, t, m, k in cols))
