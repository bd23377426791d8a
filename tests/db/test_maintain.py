"""Maintenance runs to the end on a populated database while a consumer writes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors

from insights.db.maintenance import maintain
from tests.db.conftest import add_product

pytestmark = pytest.mark.integration


def populate(conn: psycopg.Connection, products: int = 50, per_product: int = 40) -> None:
    now = datetime.now(UTC)
    conn.execute(
        "INSERT INTO products (asin, title, brand) "
        "SELECT 'B' || lpad(g::text, 9, '0'), 'title ' || g, 'brand ' || (g %% 5) FROM generate_series(1, %s) g",
        (products,),
    )
    conn.execute(
        "INSERT INTO product_snapshots (asin, scraped_at, price, rating, review_count) "
        "SELECT 'B' || lpad(p::text, 9, '0'), %s - make_interval(hours => s * 6), 10 + s, 4.2, s "
        "FROM generate_series(1, %s) p, generate_series(0, %s) s",
        (now, products, per_product - 1),
    )
    # rows beyond every created partition wait in DEFAULT for maintenance to place them
    conn.execute(
        "INSERT INTO product_snapshots (asin, scraped_at, price) VALUES ('B000000001', %s, 99)",
        (now + timedelta(days=400),),
    )


def test_maintain_runs_to_the_end_while_a_consumer_writes(pg: psycopg.Connection, pg_dsn: str) -> None:
    populate(pg)
    stop = threading.Event()
    written: list[int] = []
    failures: list[BaseException] = []

    def consumer() -> None:
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                base = datetime.now(UTC)
                i = 0
                while not stop.is_set():
                    i += 1
                    conn.execute(
                        "INSERT INTO product_snapshots (asin, scraped_at, price) VALUES ('B000000002', %s, 1) "
                        "ON CONFLICT (asin, scraped_at) DO NOTHING",
                        (base + timedelta(seconds=i),),
                    )
                    written.append(i)
        except BaseException as exc:  # reported below
            failures.append(exc)

    writer = threading.Thread(target=consumer)
    writer.start()
    try:
        steps = maintain(pg_dsn)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert failures == []
    assert written, "the consumer never wrote"
    assert [s.name for s in steps] == [
        "ensure partitions", "prune partitions", "refresh summaries", "vacuum", "analyze parents"]
    assert pg.execute("SELECT count(*) FROM product_snapshots_default").fetchone()[0] == 0
    assert pg.execute("SELECT count(*) FROM product_summary_view").fetchone()[0] == 50
    vacuumed = pg.execute(
        "SELECT count(*) FROM pg_stat_user_tables s JOIN pg_inherits i ON i.inhrelid = s.relid "
        "WHERE i.inhparent = 'product_snapshots'::regclass AND s.last_vacuum IS NOT NULL").fetchone()[0]
    assert vacuumed > 0
    # autovacuum never analyzes partitioned parents; maintenance does
    assert pg.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'product_snapshots'").fetchone()[0] > 0
    assert pg.execute("SELECT count(*) FROM product_snapshots WHERE asin = 'B000000002' AND price = 1"
                      ).fetchone()[0] == len(written)


def test_summary_view_refreshes_concurrently_with_a_reader(pg: psycopg.Connection, pg_dsn: str) -> None:
    asin = add_product(pg)
    pg.execute("INSERT INTO product_snapshots (asin, scraped_at, price) VALUES (%s, now(), 7.5)", (asin,))
    with psycopg.connect(pg_dsn) as reader:
        # a reader in an open transaction holds ACCESS SHARE on the view; a plain REFRESH would wait
        reader.execute("SELECT count(*) FROM product_summary_view").fetchone()
        pg.execute("SET lock_timeout = '3s'")
        pg.execute("SELECT refresh_product_summaries()")
        reader.rollback()
    row = pg.execute("SELECT current_price FROM product_summary_view WHERE asin = %s", (asin,)).fetchone()
    assert row is not None and float(row[0]) == 7.5


def test_seed_maintenance_function_cannot_run(pg: psycopg.Connection) -> None:
    """The seed's run_maintenance_tasks() put VACUUM in a function: it fails every time."""
    pg.execute("""
        CREATE FUNCTION seed_maintenance() RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            ANALYZE;
            VACUUM ANALYZE product_snapshots;
        END;
        $$""")
    with pytest.raises(errors.ActiveSqlTransaction, match="VACUUM cannot be executed from a function"):
        pg.execute("SELECT seed_maintenance()")


def test_seed_backup_functions_are_gone_in_postgresql_15(pg: psycopg.Connection) -> None:
    """ddl/README.md documents pg_backup_start/pg_backup_stop instead of the seed's calls."""
    names = {r[0] for r in pg.execute(
        "SELECT proname FROM pg_proc WHERE proname IN "
        "('pg_start_backup', 'pg_stop_backup', 'pg_backup_start', 'pg_backup_stop')").fetchall()}
    assert names == {"pg_backup_start", "pg_backup_stop"}
