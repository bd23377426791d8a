"""Source tables -> CDC reader -> Kafka -> summaries consumer, checked against the refreshed view.

The strongest check there is: after every round of changes, the summary rows of the
active products equal what ``product_summary_view`` computes from the source tables
after ``REFRESH MATERIALIZED VIEW``, and the alert counts equal a count over ``alerts``.
"""

from __future__ import annotations

import json
import random
import string
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from insights.cli.main import app
from core.settings import Settings
from streams.cdc.envelope import make_decoder
from streams.topics import cdc_topic_name
from tests.summaries.conftest import (
    assert_matches_source,
    cdc_reader,
    consume_all,
    everything,
    summary_rows,
    view_rows,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def add_product(pg: psycopg.Connection, asin: str, title: str, brand: str | None = None,
                category: str | None = None, active: bool = True) -> None:
    pg.execute(
        "INSERT INTO products (asin, title, brand, category, is_active) VALUES (%s, %s, %s, %s, %s)",
        (asin, title, brand, category, active),
    )


def add_snapshot(pg: psycopg.Connection, asin: str, age: timedelta, price: str | None, *, rating: str | None = "4.10",
                 reviews: int = 10, bsr: Any = None, status: str = "In Stock", at: datetime | None = None) -> int:
    row = pg.execute(
        "INSERT INTO product_snapshots (asin, price, rating, review_count, bsr_data, availability_status, scraped_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (asin, price, rating, reviews, json.dumps(bsr if bsr is not None else {"Home": 100}), status,
         at or NOW - age),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_alert(pg: psycopg.Connection, asin: str | None, *, read: bool = False, resolved: bool = False) -> int:
    row = pg.execute(
        "INSERT INTO alerts (event_id, alert_type, target_asin, severity, title, message, is_read, is_resolved) "
        "VALUES (%s, 'price_drop', %s, 'high', 't', 'm', %s, %s) RETURNING id",
        (uuid.uuid4(), asin, read, resolved),
    ).fetchone()
    assert row is not None
    return int(row[0])


def toast_updates(settings: Settings) -> list[dict[str, Any]]:
    """The snapshot updates on the CDC topic whose bsr_data was left out as unchanged TOAST."""
    topic = cdc_topic_name(settings, "product_snapshots")
    decode = make_decoder(settings)
    consumer = Consumer(settings.kafka.client_config(**{"group.id": f"peek-{uuid.uuid4().hex}", "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found: list[dict[str, Any]] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.5:
            messages = consumer.consume(1000, timeout=0.3)
            if messages:
                quiet_since = time.monotonic()
            for msg in messages:
                event = decode(msg.value())
                if event["op"] == "u" and "bsr_data" in event["unchanged_toast"]:
                    found.append(event)
        return found
    finally:
        consumer.close()


def test_summaries_follow_inserts_updates_moves_deletes_and_equal_the_refreshed_view(
    cdc_settings: Settings, pg: psycopg.Connection
) -> None:
    # a bsr_data too big and too random to stay inline: an UPDATE that leaves it alone sends no value
    big_bsr = {"".join(random.choices(string.ascii_letters, k=12)): random.randint(1, 10**6) for _ in range(1500)}
    with cdc_reader(cdc_settings) as reader:
        with pg.transaction():
            add_product(pg, "B0SUM00001", "Kettle", "Acme", "Kitchen")
            add_product(pg, "B0SUM00002", "Toaster", "Acme", "Kitchen")
            add_product(pg, "B0SUM00003", "Lamp", None, "Home")
            add_product(pg, "B0SUM00004", "Chair", "Seats", "Furniture")
            add_product(pg, "B0SUM00005", "Desk", "Seats", "Furniture", active=False)
            add_product(pg, "B0SUM00006", "Nothing yet", "Acme")
            add_snapshot(pg, "B0SUM00001", timedelta(days=40), "30.00")  # outside the window
            add_snapshot(pg, "B0SUM00001", timedelta(days=20), "25.00")
            add_snapshot(pg, "B0SUM00001", timedelta(days=10), "27.10", rating="4.30", reviews=12)
            add_snapshot(pg, "B0SUM00001", timedelta(days=1), "24.99", rating="4.40", reviews=15)
            p1_newest = add_snapshot(pg, "B0SUM00001", timedelta(hours=2), None, rating=None, status="Unavailable")
            add_snapshot(pg, "B0SUM00002", timedelta(days=5), "49.00")
            p2_newest = add_snapshot(pg, "B0SUM00002", timedelta(days=3), "45.00", bsr=big_bsr)
            p3_only = add_snapshot(pg, "B0SUM00003", timedelta(days=35), "12.00")  # no price in the window
            p4_old = add_snapshot(pg, "B0SUM00004", timedelta(days=40), "80.00")
            add_snapshot(pg, "B0SUM00004", timedelta(days=2), "75.50")
            add_snapshot(pg, "B0SUM00005", timedelta(days=2), "99.00")
            a1 = add_alert(pg, "B0SUM00001")
            add_alert(pg, "B0SUM00001", read=True)
            add_alert(pg, "B0SUM00001", read=True, resolved=True)
            a_p2 = add_alert(pg, "B0SUM00002")
            add_alert(pg, None)  # an alert about no product counts nowhere
        reader.wait_published()
        consume_all(cdc_settings)
        assert_matches_source(pg)
        assert len(summary_rows(pg)) == 5

        # round two: every kind of change, each its own transaction
        pg.execute("UPDATE product_snapshots SET price = 21.50 WHERE id = %s", (p2_newest,))
        pg.execute("UPDATE product_snapshots SET price = 22.75 WHERE id = %s", (p2_newest,))
        # scraped_at 40 days ago -> 6 hours ago: another partition, so a delete + an insert
        pg.execute("UPDATE product_snapshots SET scraped_at = %s WHERE id = %s", (NOW - timedelta(hours=6), p4_old))
        pg.execute("DELETE FROM product_snapshots WHERE id = %s", (p1_newest,))
        pg.execute("UPDATE product_snapshots SET asin = 'B0SUM00001' WHERE id = %s", (p3_only,))
        pg.execute("UPDATE alerts SET is_read = true WHERE id = %s", (a1,))
        pg.execute("DELETE FROM alerts WHERE id = %s", (a_p2,))
        pg.execute("UPDATE products SET title = 'Lamp v2', brand = 'Lumen' WHERE asin = 'B0SUM00003'")
        pg.execute("UPDATE products SET is_active = false WHERE asin = 'B0SUM00004'")
        pg.execute("UPDATE products SET is_active = true WHERE asin = 'B0SUM00005'")
        pg.execute("DELETE FROM products WHERE asin = 'B0SUM00006'")
        with pg.transaction():
            add_product(pg, "B0SUM00007", "Fresh", "New", "Garden")
            add_snapshot(pg, "B0SUM00007", timedelta(minutes=5), "9.99")
        reader.wait_published()
        consume_all(cdc_settings)

    assert_matches_source(pg)
    rows = {r[0]: r for r in pg.execute("SELECT * FROM summaries.product_summary").fetchall()}
    assert "B0SUM00006" not in rows  # the deleted product has no summary
    assert rows["B0SUM00004"][4] is False  # kept, inactive, out of the view
    p1 = pg.execute(
        "SELECT current_price, last_updated, min_price_30d, max_price_30d FROM summaries.product_summary "
        "WHERE asin = 'B0SUM00001'"
    ).fetchone()
    assert p1 is not None and p1[0] == Decimal("24.99")  # the newest snapshot was deleted
    p2 = pg.execute("SELECT current_price, bsr_data FROM summaries.product_summary WHERE asin = 'B0SUM00002'").fetchone()
    assert p2 == (Decimal("22.75"), big_bsr)  # TOAST left out by the updates, kept from the insert
    assert len(toast_updates(cdc_settings)) == 2, "the test did not exercise unchanged TOAST"
    moved = pg.execute(
        "SELECT last_updated, current_price FROM summaries.product_summary WHERE asin = 'B0SUM00004'"
    ).fetchone()
    assert moved == (NOW - timedelta(hours=6), Decimal("80.00"))  # the moved snapshot is the newest now

    # redelivery: a new group replays the three topics from the start; nothing may change,
    # not even computed_at (a row whose summary is unchanged is not rewritten)
    before = everything(pg)
    replay = consume_all(cdc_settings, group=f"replay-{uuid.uuid4().hex[:8]}")
    assert replay.totals.stored > 0 and replay.totals.dead_letters == 0
    assert everything(pg) == before


def test_truncates_of_the_root_tables_leave_the_summaries_right(cdc_settings: Settings, pg: psycopg.Connection) -> None:
    with cdc_reader(cdc_settings) as reader:
        with pg.transaction():
            add_product(pg, "B0TRUNC001", "One", "A")
            add_product(pg, "B0TRUNC002", "Two", "B")
            for days, price in ((1, "10.00"), (2, "11.00"), (40, "12.00")):
                add_snapshot(pg, "B0TRUNC001", timedelta(days=days), price)
                add_snapshot(pg, "B0TRUNC002", timedelta(days=days), price)
            add_alert(pg, "B0TRUNC001")
            add_alert(pg, "B0TRUNC002", read=True)
        reader.wait_published()
        consume_all(cdc_settings)
        assert_matches_source(pg)

        with pg.transaction():  # a truncate, then a row in the same transaction: the row stays
            pg.execute("TRUNCATE product_snapshots")
            add_snapshot(pg, "B0TRUNC001", timedelta(hours=1), "8.00")
        pg.execute("TRUNCATE alerts")
        reader.wait_published()
        consume_all(cdc_settings)
        assert_matches_source(pg)
        got = pg.execute(
            "SELECT asin, current_price, min_price_30d, alerts_total FROM summaries.product_summary ORDER BY asin"
        ).fetchall()
        assert got == [("B0TRUNC001", Decimal("8.00"), Decimal("8.00"), 0), ("B0TRUNC002", None, None, 0)]

        before = everything(pg)
        consume_all(cdc_settings, group=f"replay-{uuid.uuid4().hex[:8]}")  # truncates replayed too
        assert everything(pg) == before

        pg.execute("TRUNCATE products CASCADE")
        reader.wait_published()
        consume_all(cdc_settings)
    assert_matches_source(pg)
    assert pg.execute("SELECT count(*) FROM summaries.product_summary").fetchone() == (0,)


def test_sweep_moves_the_30_day_window_with_time(
    cdc_settings: Settings, pg: psycopg.Connection, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = datetime.now(UTC) - timedelta(days=30) + timedelta(seconds=12)  # leaves the window in 12 s
    with cdc_reader(cdc_settings) as reader:
        with pg.transaction():
            add_product(pg, "B0SWEEP001", "Edge", "E")
            add_product(pg, "B0SWEEP002", "Steady", "S")
            add_snapshot(pg, "B0SWEEP001", timedelta(0), "5.00", at=edge)
            add_snapshot(pg, "B0SWEEP001", timedelta(days=1), "7.00")
            add_snapshot(pg, "B0SWEEP002", timedelta(days=1), "3.00")
        reader.wait_published()
        consume_all(cdc_settings)
    computed = pg.execute(
        "SELECT min_price_30d, window_expires_at FROM summaries.product_summary WHERE asin = 'B0SWEEP001'"
    ).fetchone()
    assert computed == (Decimal("5.00"), edge + timedelta(days=30)), "the edge price was not in the window yet"

    time.sleep(max((edge + timedelta(days=30) - datetime.now(UTC)).total_seconds(), 0) + 0.5)
    assert summary_rows(pg) != view_rows(pg)  # stale: the view no longer counts the edge price
    result = CliRunner().invoke(app, ["summaries", "sweep"], env={"INSIGHTS_PG_DSN": pg_dsn})
    assert result.exit_code == 0, result.output
    assert "1 summaries recomputed (1 changed)" in result.output
    assert_matches_source(pg)
    assert pg.execute(
        "SELECT min_price_30d, max_price_30d FROM summaries.product_summary WHERE asin = 'B0SWEEP001'"
    ).fetchone() == (Decimal("7.00"), Decimal("7.00"))
    again = CliRunner().invoke(app, ["summaries", "sweep"], env={"INSIGHTS_PG_DSN": pg_dsn})
    assert "0 summaries recomputed" in again.output
