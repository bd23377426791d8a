"""The reader against the real PostgreSQL and Kafka: every kind of change, with correct values."""

from __future__ import annotations

import json
import random
import string
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc import slot as slots
from streams.cdc.lsn import parse_lsn
from tests.cdc.conftest import running_reader, wait_for

pytestmark = pytest.mark.integration


def _q(schema: str, text: str) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(schema))


def by_key(events: list[tuple[bytes | None, int, dict[str, Any]]]) -> dict[bytes | None, list[dict[str, Any]]]:
    out: dict[bytes | None, list[dict[str, Any]]] = {}
    for key, _partition, value in events:
        out.setdefault(key, []).append(value)
    return out


def test_inserts_updates_deletes_nulls_and_types(cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any) -> None:
    with running_reader(cdc_settings):
        pg.execute(_q(cdc_schema, """
            INSERT INTO {s}.products (asin, title, brand, weight, dimensions, tracking_frequency)
            VALUES ('B001', 'Kettle', NULL, 1.25, %s, '1 day 02:00:00')"""), ('{"w": 10, "h": [1, 2]}',))
        pg.execute(_q(cdc_schema, """
            INSERT INTO {s}.product_snapshots (id, asin, price, rating, bsr_data, bullet_points, source_ip, score, scraped_at)
            VALUES (1, 'B001', 19.99, 4.50, %s, ARRAY['a', 'b "c"', NULL], '10.1.2.3', 0.1, '2024-01-15 10:00:00+00')"""),
            ('{"Kitchen": 12}',))
        pg.execute(_q(cdc_schema, "UPDATE {s}.products SET title = 'Kettle 2', brand = 'Acme' WHERE asin = 'B001'"))
        pg.execute(_q(cdc_schema, "DELETE FROM {s}.product_snapshots WHERE id = 1"))
        products = events("products").read(2)
        snaps = events("product_snapshots").read(2)

    (key, _, created), (key2, _, updated) = products
    assert key == key2 == b'{"asin":"B001"}'
    assert created["op"] == "c" and updated["op"] == "u"
    assert created["after"]["brand"] is None  # SQL NULL is a value
    assert created["after"]["weight"] == "1.25"
    assert json.loads(created["after"]["dimensions"]) == {"w": 10, "h": [1, 2]}
    assert created["after"]["tracking_frequency"] == "1 day 02:00:00"
    assert updated["after"]["title"] == "Kettle 2" and updated["after"]["brand"] == "Acme"
    assert updated["before"] is None  # replica identity DEFAULT, key unchanged
    assert updated["source"]["commit_lsn"] > created["source"]["commit_lsn"]
    assert created["source"]["table"] == "products" and created["source"]["schema"] == cdc_schema

    (skey, _, ins), (dkey, _, dele) = snaps
    assert skey == dkey == b'{"id":1,"scraped_at":"2024-01-15T10:00:00+00:00"}'
    after = ins["after"]
    assert after["price"] == "19.99" and after["rating"] == "4.50" and after["review_count"] == 0
    assert json.loads(after["bullet_points"]) == ["a", 'b "c"', None]
    assert after["source_ip"] == "10.1.2.3" and after["score"] == 0.1
    assert ins["source"]["table"] == "product_snapshots"  # the root, never the partition
    assert dele["op"] == "d" and dele["after"] is None
    assert dele["before"] == {"id": 1, "scraped_at": "2024-01-15T10:00:00+00:00"}


def test_cross_partition_update_truncate_schema_change_and_toast(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any
) -> None:
    big = "".join(random.choices(string.ascii_letters, k=20_000))  # incompressible: stored out of line
    with running_reader(cdc_settings) as reader:
        pg.execute(_q(cdc_schema, "INSERT INTO {s}.products (asin, title, description) VALUES ('T1', 'toasty', %s)"), (big,))
        pg.execute(_q(cdc_schema, "UPDATE {s}.products SET title = 'still toasty' WHERE asin = 'T1'"))
        pg.execute(_q(cdc_schema, """
            INSERT INTO {s}.product_snapshots (id, asin, price, scraped_at)
            VALUES (5, 'T1', 1.00, '2024-01-20 00:00:00+00')"""))
        # moves the row from the January to the February partition
        pg.execute(_q(cdc_schema, "UPDATE {s}.product_snapshots SET scraped_at = '2024-02-03 00:00:00+00' WHERE id = 5"))
        pg.execute(_q(cdc_schema, "ALTER TABLE {s}.products ADD COLUMN color text DEFAULT 'red'"))
        pg.execute(_q(cdc_schema, "INSERT INTO {s}.products (asin, title, color) VALUES ('T2', 'new col', 'blue')"))
        pg.execute(_q(cdc_schema, "TRUNCATE {s}.product_snapshots"))
        products = events("products").read(3)
        snaps = events("product_snapshots").read(3 + 6)  # insert, delete, insert, then truncate x 6 partitions
        assert reader.schema_changes >= 1

    # across partitions Kafka keeps no order; commit_lsn restores the database's
    [(_, _, ins), (_, _, upd), (_, _, newcol)] = sorted(products, key=lambda e: e[2]["source"]["commit_lsn"])
    assert ins["after"]["description"] == big
    assert upd["op"] == "u" and upd["unchanged_toast"] == ["description"]
    assert "description" not in upd["after"] and upd["after"]["title"] == "still toasty"
    assert newcol["after"]["color"] == "blue" and newcol["key_columns"] == ["asin"]

    ops = [(k, v["op"]) for k, _, v in snaps]
    old_key = b'{"id":5,"scraped_at":"2024-01-20T00:00:00+00:00"}'
    new_key = b'{"id":5,"scraped_at":"2024-02-03T00:00:00+00:00"}'
    assert sorted(o for o in ops if o[1] != "t") == sorted([(old_key, "c"), (old_key, "d"), (new_key, "c")])
    keyed = by_key(snaps)
    assert [v["op"] for v in keyed[old_key]] == ["c", "d"]  # commit order per key
    assert keyed[new_key][0]["after"]["scraped_at"] == "2024-02-03T00:00:00+00:00"
    move_d, move_c = keyed[old_key][1], keyed[new_key][0]
    assert move_d["source"]["commit_lsn"] == move_c["source"]["commit_lsn"]  # one transaction
    truncates = [(p, v) for k, p, v in snaps if v["op"] == "t"]
    assert sorted(p for p, _ in truncates) == list(range(6)) and all(k is None for k, _, v in snaps if v["op"] == "t")


def test_confirmed_flush_advances_while_published_tables_are_idle(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    pg.execute(_q(cdc_schema, "CREATE TABLE {s}.busy (id serial PRIMARY KEY, payload text)"))
    with running_reader(cdc_settings):
        with slots.connect(cdc_settings.pg) as conn:
            start = parse_lsn(slots.slot_status(conn, cdc_settings.cdc.slot_name).confirmed_flush_lsn or "0/0")  # type: ignore[union-attr]
            for _ in range(5):  # other tables are busy, the published ones idle
                pg.execute(_q(cdc_schema, "INSERT INTO {s}.busy (payload) SELECT repeat('x', 200) FROM generate_series(1, 2000)"))
            target = parse_lsn(pg.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]

            def advanced() -> bool:
                status = slots.slot_status(conn, cdc_settings.cdc.slot_name)
                return status is not None and parse_lsn(status.confirmed_flush_lsn or "0/0") >= target

            wait_for(advanced, timeout=20, what="confirmed_flush_lsn to pass the busy table's writes")
            status = slots.slot_status(conn, cdc_settings.cdc.slot_name)
    assert status is not None and parse_lsn(status.confirmed_flush_lsn or "0/0") > start
    assert status.lag_bytes is not None and status.wal_status in ("reserved", "extended")
