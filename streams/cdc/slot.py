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
from streams.cdc.transport import NETWORK_TIMEOUTS
from streams.pg.connect import connect as pg_connect

HEARTBEAT_PREFIX = "insights.cdc.heartbeat"


def connect(pg: PostgresSettings, purpose: str = "cdc") -> psycopg.Connection[Any]:
    """An autocommit connection for slot and publication work, named ``insights-<purpose>``."""
    try:
        # keepalives: a query on a connection whose peer vanished fails in about half a
        # minute instead of waiting for the kernel's default of two hours and more
        return pg_connect(pg, purpose, **NETWORK_TIMEOUTS)
    except psycopg.OperationalError as exc:
        raise CdcError(f"cannot connect to PostgreSQL: {exc}") from None


def ensure_publication(
    conn: psycopg.Connection[Any],
    name: str,
    schema: str,
    tables: tuple[str, ...],
    include: dict[str, list[str]] | None = None,
    exclude: dict[str, list[str]] | None = None,
) -> bool:
    """Create the publication (via partition root) or bring its tables and columns in line; True if created.

    ``include``/``exclude`` (per table) become the publication's column lists (PostgreSQL 15):
    a column left out is never sent by the server, so it costs the reader nothing. A table's
    primary key columns are always published (they are the record key).
    """
    try:
        columns = {t: published_columns(conn, schema, t, (include or {}).get(t), (exclude or {}).get(t)) for t in tables}
        table_list = sql.SQL(", ").join(
            sql.Identifier(schema, t) if columns[t] is None
            else sql.SQL("{} ({})").format(sql.Identifier(schema, t), sql.SQL(", ").join(map(sql.Identifier, columns[t])))
            for t in tables
        )
        row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
        if row is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
                    sql.Identifier(name), table_list
                )
            )
            return True
        current = {
            r[0]: list(r[1] or [])
            for r in conn.execute(
                "SELECT tablename, attnames FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s",
                (name, schema),
            )
        }
        wanted = {t: columns[t] or all_columns(conn, schema, t) for t in tables}
        if set(current) != set(tables) or any(sorted(current[t]) != sorted(wanted[t]) for t in tables):
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), table_list))
        if not row[0]:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(sql.Identifier(name))
            )
    except psycopg.errors.UndefinedTable as exc:
        raise CdcError(f"cannot publish: {exc.diag.message_primary}") from None
    return False


def all_columns(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    return [c.name for c in table_relation(conn, schema, table).columns]


def published_relation(
    conn: psycopg.Connection[Any], schema: str, table: str, include: list[str] | None, exclude: list[str] | None
) -> Relation:
    """:func:`table_relation` with only the columns the publication sends (what a Relation message has)."""
    relation = table_relation(conn, schema, table)
    chosen = published_columns(conn, schema, table, include, exclude)
    if chosen is None:
        return relation
    return Relation(relation.oid, schema, table, relation.replica_identity,
                    tuple(c for c in relation.columns if c.name in chosen))


def published_columns(
    conn: psycopg.Connection[Any], schema: str, table: str, include: list[str] | None, exclude: list[str] | None
) -> list[str] | None:
    """The column list of ``table`` in the publication; None: every column (no list)."""
    if not include and not exclude:
        return None
    try:
        relation = table_relation(conn, schema, table)
    except CdcError:
        raise psycopg.errors.UndefinedTable(f'relation "{schema}.{table}" does not exist') from None
    names = [c.name for c in relation.columns]
    unknown = sorted((set(include or []) | set(exclude or [])) - set(names))
    if unknown:
        raise CdcError(f"cdc column lists name columns {schema}.{table} does not have: {', '.join(unknown)}")
    keys = set(relation.key_columns)
    dropped = keys & set(exclude or [])
    if dropped:
        raise CdcError(f"cannot exclude key column(s) {', '.join(sorted(dropped))} of {schema}.{table}: "
                       "they are the record key")
    chosen = [n for n in names if (not include or n in include or n in keys) and n not in set(exclude or [])]
    return chosen


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
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    ).fetchone()
    if row is None:
        raise CdcError(f"no table {schema}.{table}")
    oid, identity = row
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
    return Relation(oid, schema, table, identity, tuple(Column(n, t, m, k) for n, t, m, k in cols))


def primary_key(conn: psycopg.Connection[Any], oid: int) -> tuple[str, ...]:
    """The primary key columns of the table ``oid``, in key order; empty without one."""
    rows = conn.execute(
        """
        SELECT a.attname
          FROM pg_index i
          JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = %s AND i.indisprimary
         ORDER BY k.n
        """,
        (oid,),
    ).fetchall()
    return tuple(r[0] for r in rows)
