"""CDC fixtures: a uuid-named schema with small seed-shaped tables, its own slot and publication."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.settings import Settings
from streams.cdc import slot as slots
from streams.cdc.envelope import make_decoder
from streams.cdc.reader import CdcReader
from streams.topics import cdc_topic_name

TABLES = ("products", "product_snapshots")

DDL = """
CREATE TABLE {schema}.products (
    asin varchar(10) PRIMARY KEY,
    title varchar(500) NOT NULL,
    brand varchar(100),
    weight numeric(8,2),
    dimensions jsonb,
    tracking_frequency interval DEFAULT '24 hours',
    is_active boolean NOT NULL DEFAULT true,
    description text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {schema}.product_snapshots (
    id bigserial NOT NULL,
    asin varchar(10) NOT NULL,
    price numeric(10,2),
    rating numeric(3,2),
    review_count integer DEFAULT 0,
    bsr_data jsonb DEFAULT '{{}}',
    bullet_points text[],
    source_ip inet,
    score double precision,
    scraped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, scraped_at)
) PARTITION BY RANGE (scraped_at);
CREATE TABLE {schema}.product_snapshots_2024_01 PARTITION OF {schema}.product_snapshots
    FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE {schema}.product_snapshots_2024_02 PARTITION OF {schema}.product_snapshots
    FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
"""


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh empty database: the CDC tests make their own tables and need no migrations."""
    name = f"cdc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(pg_admin_dsn, dbname=name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            for _ in range(50):  # a just-killed walsender may still hold the slot for a moment
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE database = %s AND NOT active",
                    (name,),
                )
                try:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.2)


@pytest.fixture
def cdc_schema(pg: psycopg.Connection[Any]) -> str:
    name = f"cdc_{uuid.uuid4().hex[:10]}"
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    pg.execute(DDL.format(schema=sql.Identifier(name).as_string(pg)))
    return name


@pytest.fixture
def cdc_settings(settings: Settings, cdc_schema: str, pg_dsn: str) -> Iterator[Settings]:
    """Settings with a uuid slot and publication over the test schema; the slot is dropped after."""
    tag = uuid.uuid4().hex[:12]
    cdc = settings.replace(
            cdc_slot_name=f"cdc_test_{tag}",
            cdc_publication=f"cdc_test_{tag}",
            cdc_schema=cdc_schema,
            cdc_tables=list(TABLES),
            cdc_heartbeat_interval_s=1.0,
            cdc_status_interval_s=0.2,
            cdc_standby_retry_s=0.5,
        )
    yield cdc
    drop_slot_when_free(pg_dsn, cdc)


def drop_slot_when_free(dsn: str, settings: Settings) -> None:
    """A database with a slot cannot be dropped: remove the slot first, waiting up to 10 s
    for a killed or stopping walsender to let go of it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(50):
            try:
                slots.drop(conn, settings.cdc.slot_name, settings.cdc.publication)
                return
            except Exception:
                time.sleep(0.2)


@contextmanager
def running_reader(settings: Settings) -> Iterator[CdcReader]:
    """A reader streaming in a thread; stopped (and its deliveries confirmed) on exit."""
    stop = threading.Event()
    reader = CdcReader(settings, stop=stop)
    reader.setup()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            reader.run()
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield reader
    except BaseException as failed:
        stop.set()
        thread.join(60)
        if errors:  # the reader's own failure explains the test's (a timeout, a missing event)
            raise errors[0] from failed
        raise
    finally:
        stop.set()
        thread.join(60)
    if errors:
        raise errors[0]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class EventReader:
    """Reads a CDC topic from the beginning, decoding every event."""

    def __init__(self, settings: Settings, table: str) -> None:
        self.topic = cdc_topic_name(settings, table, settings.cdc.schema_name)
        self.decode = make_decoder(settings)
        self.consumer = Consumer(
            settings.kafka.client_config(
                **{"group.id": f"cdc-test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
            )
        )
        meta = self.consumer.list_topics(self.topic, timeout=10)
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in meta.topics[self.topic].partitions])
        self.events: list[tuple[bytes | None, int, dict[str, Any]]] = []

    def read(self, count: int, timeout: float = 60.0) -> list[tuple[bytes | None, int, dict[str, Any]]]:
        """Until at least ``count`` events were read in total; (key, partition, value) each."""
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            for msg in self.consumer.consume(10_000, timeout=0.5):
                if msg.error():
                    raise AssertionError(str(msg.error()))
                self.events.append((msg.key(), msg.partition(), self.decode(msg.value())))
        assert len(self.events) >= count, f"{self.topic}: {len(self.events)} events, expected {count}"
        return self.events

    def read_distinct_keys(self, count: int, timeout: float = 60.0) -> list[tuple[bytes | None, int, dict[str, Any]]]:
        """Until ``count`` distinct keys were read: after a crash, redelivered duplicates
        must not make the wait end before every change has arrived."""
        deadline = time.monotonic() + timeout
        while len({key for key, _, _ in self.events}) < count and time.monotonic() < deadline:
            for msg in self.consumer.consume(10_000, timeout=0.5):
                if msg.error():
                    raise AssertionError(str(msg.error()))
                self.events.append((msg.key(), msg.partition(), self.decode(msg.value())))
        return self.events

    def drain(self, quiet: float = 1.5) -> list[tuple[bytes | None, int, dict[str, Any]]]:
        """Everything until nothing new arrived for ``quiet`` seconds."""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            msgs = self.consumer.consume(10_000, timeout=0.3)
            for msg in msgs:
                self.events.append((msg.key(), msg.partition(), self.decode(msg.value())))
            if msgs:
                last = time.monotonic()
        return self.events

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def events(cdc_settings: Settings) -> Iterator[Callable[[str], EventReader]]:
    opened: list[EventReader] = []

    def open_(table: str) -> EventReader:
        reader = EventReader(cdc_settings, table)
        opened.append(reader)
        return reader

    yield open_
    for reader in opened:
        reader.close()
