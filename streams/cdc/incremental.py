"""Incremental snapshots, in the manner of Netflix's DBLog: chunks by primary key, interleaved
with the live stream through watermarks, resumable, with their state in PostgreSQL.

The reader keeps streaming while it snapshots. For each chunk it

1. writes a **low watermark**: a transactional logical message
   (``insights.cdc.snapshot``, ``low:<window>``) on its chunk connection;
2. selects the next chunk, ``WHERE (pk) > (last key) ORDER BY pk LIMIT cdc_incremental_chunk_size``
   (READ COMMITTED: a snapshot taken after the low watermark committed), keeping the rows
   in memory, keyed by their record key;
3. writes a **high watermark** (``high:<window>``).

When the stream reaches the low watermark the *window* opens: every change of that table
that arrives before the high watermark removes its key from the chunk (the change is as
new as the chunk's row or newer, and it is delivered anyway). At the high watermark the
rows left are published as read events (``op = r``, ``source.snapshot = true``), in the
stream, at the high watermark's position: every change after it comes after its row. So
no change is lost or reordered against its snapshot row (DBLog, section 3).

State (``<cdc schema>.insights_cdc_snapshots``: last key, rows, estimate, status per slot
and table) moves only once Kafka acknowledged the chunk's transaction: after a crash the
chunk is selected again (its reads published twice at worst; at-least-once, as every
change). Watermarks of a window the reader does not hold (one from before a crash) are
ignored. Requests arrive through the **signal table** (``<cdc schema>.insights_cdc_signals``):
``insights cdc snapshot --incremental TABLE…`` inserts a row, and so can any automation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.settings import PostgresSettings
from streams.cdc import slot as slots
from streams.cdc.envelope import keyed
from streams.cdc.errors import CdcError
from streams.cdc.pgoutput import Relation, TupleData
from streams.cdc.snapshot import _RawText, _estimate
from streams.cdc.transport import NETWORK_TIMEOUTS
from streams.pg.connect import connect

WATERMARK_PREFIX = "insights.cdc.snapshot"
SIGNALS = "insights_cdc_signals"
STATE = "insights_cdc_snapshots"

DDL = """
CREATE TABLE IF NOT EXISTS {signals} (
    id bigserial PRIMARY KEY,
    slot text NOT NULL,
    kind text NOT NULL DEFAULT 'incremental-snapshot',
    tables text[] NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    taken_at timestamptz
);
CREATE TABLE IF NOT EXISTS {state} (
    slot text NOT NULL,
    table_name text NOT NULL,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    last_key text[],
    rows_done bigint NOT NULL DEFAULT 0,
    rows_estimate bigint,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (slot, table_name)
);
"""


def ensure_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """The signal and state tables, in the published schema of the source database.

    Created here, not by a migration: the CDC reader streams from databases this project
    does not migrate (a test's, an operator's other database)."""
    conn.execute(
        sql.SQL(DDL).format(signals=sql.Identifier(schema, SIGNALS), state=sql.Identifier(schema, STATE))
    )


def request(conn: psycopg.Connection[Any], schema: str, slot: str, tables: list[str]) -> int:
    """Ask the reader of ``slot`` for an incremental snapshot of ``tables``: the signal's id."""
    ensure_tables(conn, schema)
    row = conn.execute(
        sql.SQL("INSERT INTO {} (slot, tables) VALUES (%s, %s) RETURNING id").format(sql.Identifier(schema, SIGNALS)),
        (slot, tables),
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class TableProgress:
    table: str
    status: str
    rows_done: int
    rows_estimate: int | None
    taken: bool  # the reader took the request (False: no reader running, or not yet)


def progress(conn: psycopg.Connection[Any], schema: str, slot: str, signal: int) -> list[TableProgress]:
    """Where the snapshot asked for by ``signal`` stands, table by table."""
    with conn.cursor(row_factory=dict_row) as cur:
        sig = cur.execute(
            sql.SQL("SELECT tables, taken_at FROM {} WHERE id = %s").format(sql.Identifier(schema, SIGNALS)), (signal,)
        ).fetchone()
        if sig is None:
            raise CdcError(f"no incremental snapshot request {signal}")
        rows = {
            r["table_name"]: r
            for r in cur.execute(
                sql.SQL("SELECT * FROM {} WHERE slot = %s AND table_name = ANY(%s)").format(
                    sql.Identifier(schema, STATE)
                ),
                (slot, sig["tables"]),
            )
        }
    out = []
    for table in sig["tables"]:
        r = rows.get(table)
        taken = sig["taken_at"] is not None and r is not None and r["started_at"] >= sig["taken_at"]
        out.append(
            TableProgress(
                table,
                r["status"] if taken and r else "requested",
                int(r["rows_done"]) if taken and r else 0,
                r["rows_estimate"] if r else None,
                taken,
            )
        )
    return out


# --- the reader's side ------------------------------------------------------------------------------
@dataclass
class _Table:
    name: str
    relation: Relation  # keyed by its primary key
    last_key: list[str] | None
    rows_done: int
    key_types: list[str]


@dataclass
class Window:
    """One chunk between its watermarks."""

    id: str
    table: _Table
    codec: Any  # the RelationCodec (snapshot=True) that keys and writes the chunk's rows
    rows: dict[bytes, TupleData]  # record key -> the row's text values, in key order
    last_key: list[str] | None  # the chunk's last primary key (text), where the next one starts
    complete: bool  # fewer rows than asked: the table's last chunk
    open: bool = False  # the stream passed the low watermark
    selected: int = 0

    def discard(self, key: bytes | None) -> None:
        if key is not None:
            self.rows.pop(key, None)


@dataclass
class _Pending:
    """A chunk published in a transaction not yet confirmed: its state is written once it is."""

    table: str
    last_key: list[str] | None
    rows: int
    complete: bool
    seq: int
    end_lsn: int | None = None


@dataclass
class IncrementalSnapshots:
    """The reader's incremental snapshot work: signals, windows, state. Single-threaded, like the reader."""

    pg: PostgresSettings
    schema: str
    slot: str
    chunk_size: int
    key_of: Any  # relation -> its RelationCodec for read events (keys and bodies as the stream's)
    session_options: str
    include: dict[str, list[str]] = field(default_factory=dict)  # the publication's column lists
    exclude: dict[str, list[str]] = field(default_factory=dict)
    conn: psycopg.Connection[Any] | None = None
    tables: dict[str, _Table] = field(default_factory=dict)
    window: Window | None = None
    pending: list[_Pending] = field(default_factory=list)
    _ensured: bool = False

    # --- connection -------------------------------------------------------------------
    def _conn(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            # the walsender's text formats, so chunk rows read exactly like streamed tuples
            self.conn = connect(self.pg, "cdc-incremental", options=self.session_options, **NETWORK_TIMEOUTS)
        return self.conn

    def reset(self) -> None:
        """The stream was lost: drop the window and unconfirmed chunks; the state in PostgreSQL is the truth."""
        self.window = None
        self.pending.clear()
        self.tables.clear()
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None

    # --- requests and state -------------------------------------------------------------
    def poll(self) -> None:
        """Take new signals, and (after a restart) the running snapshots the state table records."""
        conn = self._conn()
        if not self._ensured:
            ensure_tables(conn, self.schema)
            self._ensured = True
        signals, state = sql.Identifier(self.schema, SIGNALS), sql.Identifier(self.schema, STATE)
        with conn.transaction():
            taken = conn.execute(
                sql.SQL(
                    "UPDATE {} SET taken_at = clock_timestamp() WHERE slot = %s AND taken_at IS NULL RETURNING tables"
                ).format(signals),
                (self.slot,),
            ).fetchall()
            for (tables,) in taken:
                for table in tables:
                    relation = slots.table_relation(conn, self.schema, table)
                    if not relation.key_columns:
                        raise CdcError(
                            f"cannot snapshot {self.schema}.{table} incrementally: it has no primary key to chunk by"
                        )
                    conn.execute(
                        sql.SQL(
                            """
                            INSERT INTO {} (slot, table_name, rows_estimate, started_at) VALUES (%s, %s, %s, clock_timestamp())
                            ON CONFLICT (slot, table_name) DO UPDATE SET status = 'running', last_key = NULL,
                                rows_done = 0, rows_estimate = EXCLUDED.rows_estimate, started_at = clock_timestamp(),
                                updated_at = now(), finished_at = NULL
                            """
                        ).format(state),
                        (self.slot, table, _estimate(conn, relation)),
                    )
                    self.tables.pop(table, None)  # asked again: from the start
                    if self.window is not None and self.window.table.name == table:
                        self.window = None
            running = conn.execute(
                sql.SQL("SELECT table_name, last_key, rows_done FROM {} WHERE slot = %s AND status = 'running'").format(
                    state
                ),
                (self.slot,),
            ).fetchall()
        for name, last_key, rows_done in running:
            if name not in self.tables:
                relation = slots.published_relation(
                    conn, self.schema, name, self.include.get(name), self.exclude.get(name)
                )
                found = keyed(relation, relation.key_columns)
                self.tables[name] = _Table(name, found, last_key, int(rows_done), _key_types(conn, found))

    @property
    def busy(self) -> bool:
        return bool(self.tables)

    def open_window(self) -> Window | None:
        """Low watermark, the next chunk, high watermark; None when nothing is to be snapshotted."""
        if self.window is not None or not self.tables:
            return None
        table = next(iter(self.tables.values()))
        conn = self._conn()
        window_id = uuid.uuid4().hex
        relation = table.relation
        codec = self.key_of(relation)
        conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (WATERMARK_PREFIX, f"low:{window_id}"))
        rows: dict[bytes, TupleData] = {}
        last: TupleData | None = None
        count = 0
        for values in _chunk(conn, self.schema, table, self.chunk_size):
            key = codec.key(values)
            rows[key] = values
            last = values
            count += 1
        conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (WATERMARK_PREFIX, f"high:{window_id}"))
        last_key = (
            [bytes(last[i]).decode() for i in relation.key_indexes]  # type: ignore[arg-type]
            if last is not None
            else table.last_key
        )
        self.window = Window(window_id, table, codec, rows, last_key, count < self.chunk_size, selected=count)
        return self.window

    def watermark(self, content: bytes) -> tuple[str, Window] | None:
        """A watermark message of the stream: ("low"|"high", our window), None when not ours."""
        kind, _, window_id = content.decode(errors="replace").partition(":")
        window = self.window
        if window is None or window.id != window_id or kind not in ("low", "high"):
            return None  # a window of a previous run (before a crash or a lost stream)
        if kind == "low":
            window.open = True
        return kind, window

    def published(self, window: Window, seq: int) -> None:
        """The window's rows were produced in the transaction ``seq``: remember what to record."""
        table = window.table
        table.last_key = window.last_key
        table.rows_done += len(window.rows)
        self.pending.append(_Pending(table.name, window.last_key, len(window.rows), window.complete, seq))
        if window.complete:
            self.tables.pop(table.name, None)
        self.window = None

    def committed(self, seq: int, end_lsn: int) -> None:
        for p in self.pending:
            if p.seq == seq:
                p.end_lsn = end_lsn

    def confirmed(self, position: int) -> None:
        """Write the state of every chunk whose transaction the slot now has confirmed."""
        done = [p for p in self.pending if p.end_lsn is not None and p.end_lsn <= position]
        if not done:
            return
        conn = self._conn()
        state = sql.Identifier(self.schema, STATE)
        with conn.transaction():
            for p in done:
                conn.execute(
                    sql.SQL(
                        """
                        UPDATE {} SET last_key = %s, rows_done = rows_done + %s, updated_at = now(),
                               status = CASE WHEN %s THEN 'done' ELSE status END,
                               finished_at = CASE WHEN %s THEN now() ELSE finished_at END
                         WHERE slot = %s AND table_name = %s AND status = 'running'
                        """
                    ).format(state),
                    (p.last_key, p.rows, p.complete, p.complete, self.slot, p.table),
                )
        self.pending = [p for p in self.pending if p not in done]


def _key_types(conn: psycopg.Connection[Any], relation: Relation) -> list[str]:
    rows = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s AND attnum > 0",
            (relation.oid,),
        ).fetchall()
    )
    return [rows[name] for name in relation.key_columns]


def _chunk(conn: psycopg.Connection[Any], schema: str, table: _Table, size: int) -> Iterator[TupleData]:
    """The next ``size`` rows after ``table.last_key`` in primary-key order, as text (bytes) values."""
    relation = table.relation
    keys = [sql.Identifier(name) for name in relation.key_columns]
    query = sql.SQL("SELECT {columns} FROM {table} {where} ORDER BY {keys} LIMIT {size}").format(
        columns=sql.SQL(", ").join(sql.Identifier(c.name) for c in relation.columns),
        table=sql.Identifier(schema, table.name),
        where=(
            sql.SQL("WHERE ({}) > ({})").format(
                sql.SQL(", ").join(keys),
                # type names from the catalog (format_type), not from a user
                sql.SQL(", ").join(sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.SQL(t))
                                   for v, t in zip(table.last_key, table.key_types)),
            )
            if table.last_key
            else sql.SQL("")
        ),
        keys=sql.SQL(", ").join(keys),
        size=sql.Literal(size),
    )
    with conn.cursor() as cur:
        for column in relation.columns:
            cur.adapters.register_loader(column.type_oid, _RawText)
        cur.execute(query)
        for row in cur.fetchall():
            yield list(row)
