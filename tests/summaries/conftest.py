"""Summaries fixtures: the CDC reader over the migrated tables, the summaries consumer, comparisons.

The reader streams the test database's real ``products``, ``product_snapshots`` and
``alerts`` under a uuid slot, publication and topic prefix; the consumer runs until its
offsets in ``consumer_offsets`` reach the end of the three topics.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from consumers.registry import build_loop
from core.settings import Settings
from streams.cdc.lsn import parse_lsn
from streams.cdc.reader import CdcReader
from streams.consumer import ConsumerLoop
from streams.topics import summaries_source_topics
from tests.cdc.conftest import drop_slot_when_free, running_reader
from tests.loop_thread import LoopThread

SOURCE_TABLES = ["products", "product_snapshots", "alerts"]

#: product_summary_view's columns, in its order
VIEW_COLUMNS = (
    "asin, title, brand, category, current_price, current_rating, current_review_count, bsr_data, "
    "availability_status, last_updated, min_price_30d, max_price_30d, avg_price_30d"
)
VIEW_QUERY = "SELECT " + VIEW_COLUMNS + " FROM product_summary_view ORDER BY asin"
SUMMARY_QUERY = "SELECT " + VIEW_COLUMNS + " FROM summaries.product_summary WHERE is_active ORDER BY asin"


@pytest.fixture
def cdc_settings(settings: Settings, pg_dsn: str) -> Iterator[Settings]:
    """Settings with a uuid slot and publication over the three source tables; dropped after."""
    tag = uuid.uuid4().hex[:12]
    cdc = settings.replace(
            cdc_slot_name=f"sum_test_{tag}",
            cdc_publication=f"sum_test_{tag}",
            cdc_schema="public",
            cdc_tables=SOURCE_TABLES,
            cdc_heartbeat_interval_s=0.5,
            cdc_status_interval_s=0.2,
            cdc_standby_retry_s=0.5,
            batch_wait_ms=100,
        )
    yield cdc
    _delete_topics(cdc)
    drop_slot_when_free(pg_dsn, cdc)


def _delete_topics(settings: Settings) -> None:
    """The CDC topics and DLQs this test made (all under its own prefix)."""
    admin = AdminClient(settings.kafka.client_config())
    mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.kafka.topic_prefix + ".")]
    if mine:
        for future in admin.delete_topics(mine).values():
            try:
                future.result(timeout=30)
            except Exception:
                pass


class RunningReader:
    def __init__(self, reader: CdcReader, settings: Settings) -> None:
        self.reader = reader
        self.settings = settings

    def wait_published(self, timeout: float = 30.0) -> None:
        """Until everything committed so far is acknowledged by Kafka (the slot confirms it)."""
        with psycopg.connect(self.settings.pg.conninfo(), autocommit=True) as conn:
            target = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        deadline = time.monotonic() + timeout
        while self.reader.tracker.confirmed < target:
            assert time.monotonic() < deadline, "the CDC reader did not publish the changes in time"
            time.sleep(0.05)


@contextmanager
def cdc_reader(settings: Settings) -> Iterator[RunningReader]:
    """The CDC reader streaming in a thread (slot, publication and topics set up first)."""
    with running_reader(settings) as reader:
        yield RunningReader(reader, settings)


def _high_watermark(consumer: Consumer, tp: TopicPartition, attempts: int = 4) -> int:
    """The partition's end; a broker slow to answer on a loaded machine is asked again
    (one KafkaException "timed out" failed an incremental-resync test once in eight runs)."""
    for attempt in range(attempts):
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)[1]
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer(settings.kafka.client_config(**{"group.id": f"probe-{uuid.uuid4().hex}"}))
    try:
        out: dict[tuple[str, int], int] = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in meta.partitions:
                out[(topic, partition)] = _high_watermark(consumer, TopicPartition(topic, partition))
        return out
    finally:
        consumer.close()


def consume_all(settings: Settings, group: str | None = None, timeout: float = 60.0) -> ConsumerLoop:
    """Run the summaries consumer until its stored offsets reach the topics' current ends."""
    group = group or settings.consumer.group
    targets = {k: v for k, v in end_offsets(settings, summaries_source_topics(settings)).items() if v > 0}
    loop = build_loop(settings, "summaries", group=group)
    running = LoopThread(loop)
    deadline = time.monotonic() + timeout
    try:
        with psycopg.connect(settings.pg.conninfo(), autocommit=True) as conn:
            while True:
                stored = {
                    (t, p): o
                    for t, p, o in conn.execute(
                        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", (group,)
                    ).fetchall()
                }
                if all(stored.get(k, 0) >= v for k, v in targets.items()):
                    break
                if not running.running():
                    break
                assert time.monotonic() < deadline, f"summaries consumer behind after {timeout}s: {stored} < {targets}"
                time.sleep(0.1)
    finally:
        running.stop(30)
    running.raise_failure()
    return loop


def view_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """product_summary_view after REFRESH: what the materialized view computes from the source."""
    conn.execute("REFRESH MATERIALIZED VIEW product_summary_view")
    conn.execute("SET TimeZone = 'UTC'")
    return conn.execute(VIEW_QUERY).fetchall()


def summary_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(SUMMARY_QUERY).fetchall()


def source_alert_counts(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        """
        SELECT p.asin, p.is_active, count(a.id), count(a.id) FILTER (WHERE a.is_read IS NOT TRUE),
               count(a.id) FILTER (WHERE a.is_resolved IS NOT TRUE)
        FROM products p LEFT JOIN alerts a ON a.target_asin = p.asin
        GROUP BY p.asin, p.is_active ORDER BY p.asin
        """
    ).fetchall()


def summary_alert_counts(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT asin, is_active, alerts_total, alerts_unread, alerts_unresolved FROM summaries.product_summary ORDER BY asin"
    ).fetchall()


def everything(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every summaries table (state, tombstones, computed_at included)."""
    tables = ["products", "snapshots", "alerts", "truncations", "product_summary"]
    return {
        t: conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier("summaries", t))).fetchall()
        for t in tables
    }


def assert_matches_source(conn: psycopg.Connection) -> None:
    expected, got = view_rows(conn), summary_rows(conn)
    assert [r[0] for r in got] == [r[0] for r in expected], "the set of active products differs"
    for want, have in zip(expected, got, strict=True):
        assert have == want, f"{want[0]}: summary {have} != view {want}"
    assert summary_alert_counts(conn) == source_alert_counts(conn)


def dec(text: str) -> Decimal:
    return Decimal(text)


Exec = Callable[..., Any]
