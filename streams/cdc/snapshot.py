"""Initial snapshot: every current row as a read event (op ``r``), without gaps or double counts.

The slot is created on a replication connection with ``SNAPSHOT 'export'``: PostgreSQL
returns the slot's consistent point and the name of a snapshot that sees exactly the
transactions committed before it. The rows are read in a REPEATABLE READ transaction
that adopts that snapshot (``SET TRANSACTION SNAPSHOT``), while the replication
connection stays open and idle (the exported snapshot lives only that long). Every
change committed later is streamed by ``insights cdc run`` from the slot: nothing is
missed and nothing is counted twice.

Values are read as the type's text output (the same text pgoutput sends) and written
by the same envelope writers as streamed changes (``envelope.read_body``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer
import psycopg
from psycopg import sql
from psycopg.adapt import Loader
from rich.console import Console
from rich.progress import Progress

from core.settings import Settings
from streams.admin import ensure_topics
from streams.cdc import slot as slots
from streams.cdc.envelope import RelationCodec, SourceInfo, keyed, make_encoder, masking, read_body, read_event, source_txn
from streams.cdc.errors import CdcError
from streams.cdc.lsn import parse_lsn
from streams.cdc.transport import SESSION_OPTIONS, ReplicationConnection
from streams.cdc.typed_events import TypedEvents
from streams.cdc.typed_schemas import make_versions
from streams.cdc.values import ValueConverter
from streams.kafka.clients import producer_config
from streams.pg.connect import connect
from streams.topics import cdc_tables, cdc_topic_name, cdc_topics


class _RawText(Loader):
    """Keep a column's text output as bytes, exactly what pgoutput would send."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


#: ``(table, rows sent so far, rows estimated or None)``, after every fetched chunk and
#: once at each table's start: the caller decides how to show it (the CLI draws bars)
SnapshotProgress = Callable[[str, int, "int | None"], None]


@dataclass
class SnapshotResult:
    consistent_point: str
    rows: dict[str, int] = field(default_factory=dict)


def _estimate(conn: psycopg.Connection[Any], relation: Relation) -> int | None:
    """The planner's row count of a table and its partitions; None before any ANALYZE."""
    row = conn.execute(
        """
        SELECT sum(c.reltuples) FILTER (WHERE c.reltuples >= 0)::bigint
          FROM pg_class c
         WHERE (c.oid = %(oid)s AND c.relkind = 'r')
            OR c.oid IN (SELECT t.relid FROM pg_partition_tree(%(oid)s::oid::regclass) t WHERE t.isleaf)
        """,
        {"oid": relation.oid},
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def run_snapshot(
    settings: Settings,
    tables: tuple[str, ...],
    *,
    recreate_slot: bool = False,
    console: Console | None = None,
    producer: Producer | None = None,
    fetch_size: int = 10_000,
    on_progress: SnapshotProgress | None = None,
) -> SnapshotResult:
    schema = settings.cdc.schema_name
    with slots.connect(settings.pg, "cdc-snapshot") as conn:
        slots.ensure_publication(
            conn, settings.cdc.publication, schema, cdc_tables(settings),
            settings.cdc.include_columns, settings.cdc.exclude_columns,
        )
        if slots.slot_exists(conn, settings.cdc.slot_name):
            if not recreate_slot:
                raise CdcError(
                    f"slot {settings.cdc.slot_name!r} exists: a snapshot must start a new slot so that "
                    "streaming resumes exactly where the snapshot ends; stop the reader and pass --recreate-slot"
                )
            slots.drop(conn, settings.cdc.slot_name, "")
    ensure_topics(settings, cdc_topics(settings, tables, schema))
    producer = producer or Producer(producer_config(settings.kafka, "cdc"))
    typed: TypedEvents | None = None  # INSIGHTS_CDC_FORMAT=typed: made with the snapshot's connection
    encode = make_encoder(settings, [t.name for t in cdc_topics(settings, tables, schema)]) \
        if settings.cdc.format == "generic" else None
    header = encode.header if encode is not None else None
    converter = ValueConverter()
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    replication = ReplicationConnection.open(settings.pg, "cdc-snapshot")
    try:
        created = replication.create_slot(settings.cdc.slot_name, export_snapshot=True)
        point = parse_lsn(created.consistent_point)
        result = SnapshotResult(created.consistent_point)
        src = SourceInfo(point, point, 0, int(time.time() * 1_000_000), snapshot=True)
        txn = source_txn(src.commit_lsn, src.xid, src.commit_time_us)
        with connect(settings.pg, "cdc-snapshot", autocommit=False, options=SESSION_OPTIONS) as conn:
            if encode is None:  # its tables are described as this snapshot sees the catalog
                typed = TypedEvents(settings, make_versions(settings), catalog=lambda: conn)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(created.snapshot_name)))
            with Progress(console=console, transient=True, disable=console is None) as progress:
                for table in tables:
                    found = slots.published_relation(
                        conn, schema, table, settings.cdc.include_columns.get(table), settings.cdc.exclude_columns.get(table)
                    )
                    # the key and masks streamed changes get
                    relation = masking(keyed(found, found.key_columns), settings.cdc.mask_columns.get(table))
                    codec = RelationCodec(relation, converter, snapshot=True)
                    topic = cdc_topic_name(settings, table, schema)
                    task = progress.add_task(f"{schema}.{table}", total=None)
                    count = 0
                    estimate = _estimate(conn, relation) if on_progress is not None else None
                    if on_progress is not None:
                        on_progress(f"{schema}.{table}", 0, estimate)
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
                                values = list(row)
                                if typed is not None:
                                    key, value = typed.read(relation, values, src)
                                elif header is None:  # a framing we cannot write ourselves
                                    event = read_event(converter, relation, values, src)
                                    key, value = event.key, encode(event.value)  # type: ignore[misc]
                                else:
                                    key, body = read_body(codec, values, src.lsn, txn)
                                    value = header + body
                                _produce(producer, topic, key, value, delivered)
                            count += len(rows)
                            progress.update(task, completed=count)
                            if on_progress is not None:
                                # the planner's estimate may be low: never more done than total
                                on_progress(f"{schema}.{table}", count, None if estimate is None else max(estimate, count))
                    result.rows[table] = count
            conn.rollback()
        _flush(producer, failures)
        return result
    finally:
        replication.close()
        if typed is not None:
            typed.close()


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
