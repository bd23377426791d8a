"""Initial snapshot: every current row as a read event (op ``r``), without gaps or double counts.

The slot is created on a replication connection with ``SNAPSHOT 'export'``: PostgreSQL
returns the slot's consistent point and the name of a snapshot that sees exactly the
transactions committed before it. The rows are read in a REPEATABLE READ transaction
that adopts that snapshot (``SET TRANSACTION SNAPSHOT``), while the replication
connection stays open and idle (the exported snapshot lives only that long). Every
change committed later is streamed by ``insights cdc run`` from the slot: nothing is
missed and nothing is counted twice.

Values are read as the type's text output (the same text pgoutput sends) and go
through the same conversion as streamed changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Producer
from psycopg import sql
from psycopg.adapt import Loader
from rich.console import Console
from rich.progress import Progress

from core.settings import Settings
from streams.cdc import slot as slots
from streams.cdc.codec import make_encoder
from streams.cdc.envelope import SourceInfo, read_event
from streams.cdc.errors import CdcError
from streams.cdc.lsn import parse_lsn
from streams.cdc.pgoutput import Column, Relation
from streams.cdc.reader import producer_config
from streams.cdc.transport import SESSION_OPTIONS, ReplicationConnection
from streams.cdc.values import ValueConverter
from streams.admin import ensure_topics
from streams.topics import cdc_tables, cdc_topic_name, cdc_topics


class _RawText(Loader):
    """Keep a column's text output as bytes, exactly what pgoutput would send."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


@dataclass
class SnapshotResult:
    consistent_point: str
    rows: dict[str, int] = field(default_factory=dict)


def _relation(conn: psycopg.Connection[Any], schema: str, table: str) -> Relation:
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


def run_snapshot(
    settings: Settings,
    tables: tuple[str, ...],
    *,
    recreate_slot: bool = False,
    console: Console | None = None,
    producer: Producer | None = None,
    fetch_size: int = 10_000,
) -> SnapshotResult:
    schema = settings.cdc.schema_name
    with slots.connect(settings) as conn:
        slots.ensure_publication(conn, settings.cdc.publication, schema, cdc_tables(settings))
        if slots.slot_exists(conn, settings.cdc.slot_name):
            if not recreate_slot:
                raise CdcError(
                    f"slot {settings.cdc.slot_name!r} exists: a snapshot must start a new slot so that "
                    "streaming resumes exactly where the snapshot ends; stop the reader and pass --recreate-slot"
                )
            slots.drop(conn, settings.cdc.slot_name, "")
    ensure_topics(settings, cdc_topics(settings, tables, schema))
    producer = producer or Producer(producer_config(settings))
    encode = make_encoder(settings)
    converter = ValueConverter()
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    replication = ReplicationConnection(settings.pg.conninfo(replication="database", options=SESSION_OPTIONS))
    try:
        created = replication.create_slot(settings.cdc.slot_name, export_snapshot=True)
        point = parse_lsn(created.consistent_point)
        result = SnapshotResult(created.consistent_point)
        src = SourceInfo(point, point, 0, int(time.time() * 1_000_000), snapshot=True)
        with psycopg.connect(settings.pg.conninfo(options=SESSION_OPTIONS)) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(created.snapshot_name)))
            with Progress(console=console, transient=True, disable=console is None) as progress:
                for table in tables:
                    relation = _relation(conn, schema, table)
                    topic = cdc_topic_name(settings, table, schema)
                    task = progress.add_task(f"{schema}.{table}", total=None)
                    count = 0
                    with conn.cursor(name=f"cdc_snapshot_{table}") as cur:
                        for column in relation.columns:
                            cur.adapters.register_loader(column.type_oid, _RawText)
                        cur.execute(
                            sql.SQL("SELECT {} FROM {}").format(
                                sql.SQL(", ").join(sql.Identifier(c.name) for c in relation.columns),
                                sql.Identifier(schema, table),
                            )
                        )
                        while rows := cur.fetchmany(fetch_size):
                            for row in rows:
                                after, _ = converter.envelope_row(relation, list(row))
                                event = read_event(relation, after, src)
                                _produce(producer, topic, event.key, encode(event.value), delivered)
                            count += len(rows)
                            progress.update(task, completed=count)
                    result.rows[table] = count
            conn.rollback()
        _flush(producer, failures)
        return result
    finally:
        replication.close()


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes, cb: Callable[..., None]) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=cb)
            return
        except BufferError:
            producer.poll(0.05)


def _flush(producer: Producer, failures: list[KafkaError]) -> None:
    remaining = producer.flush(120)
    if failures:
        raise CdcError(f"Kafka did not accept {len(failures)} snapshot events: {failures[0]}")
    if remaining:
        raise CdcError(f"{remaining} snapshot events not acknowledged by Kafka within 120 s")
