"""``insights summaries rebuild``: a shadow copy from a snapshot at a WAL position, verified, caught up, swapped.

Real PostgreSQL, Kafka, CDC reader and summaries consumer (tests/summaries/conftest.py). The
oracle is ``product_summary_view`` after REFRESH (and the GROUP BY for ``price_daily``).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from consumers.registry import build_loop
from consumers.summaries.rebuild import RebuildError, rebuild
from insights.cli.confirm import ConfirmationRequired
from core.settings import Settings
from insights.cli.main import app
from streams.topics import summaries_source_topics
from tests.loop_thread import LoopThread
from tests.rules.conftest import caught_up
from tests.summaries.conftest import assert_matches_source, cdc_reader, consume_all
from tests.summaries.test_summaries_cdc import add_alert, add_product, add_snapshot

pytestmark = pytest.mark.integration

PRICE_DAILY_ORACLE = """
SELECT asin, (scraped_at AT TIME ZONE 'UTC')::date,
       (array_agg(price ORDER BY scraped_at) FILTER (WHERE price IS NOT NULL))[1], max(price), min(price),
       (array_agg(price ORDER BY scraped_at DESC) FILTER (WHERE price IS NOT NULL))[1], count(*)::int
FROM product_snapshots GROUP BY 1, 2 ORDER BY 1, 2
"""
PRICE_DAILY = "SELECT asin, day, open, high, low, close, snapshots FROM summaries.price_daily ORDER BY 1, 2"
GRANTS = """
SELECT c.relname, a.grantee::regrole::text, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE n.nspname = 'summaries' AND c.relkind = 'r' ORDER BY 1, 2, 3
"""
SCHEMA_GRANTS = "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a " \
                "WHERE n.nspname = 'summaries' ORDER BY 1, 2"


def assert_all_right(pg: psycopg.Connection) -> None:
    assert_matches_source(pg)
    assert pg.execute(PRICE_DAILY).fetchall() == pg.execute(PRICE_DAILY_ORACLE).fetchall()


def grants(pg: psycopg.Connection) -> tuple[list[Any], list[Any]]:
    return pg.execute(GRANTS).fetchall(), pg.execute(SCHEMA_GRANTS).fetchall()


def test_rebuild_repairs_corrupted_summaries_and_the_live_sink_keeps_applying(
    cdc_settings: Settings, pg: psycopg.Connection
) -> None:
    with cdc_reader(cdc_settings) as reader:
        with pg.transaction():
            for n in range(5):
                asin = f"B0REBLD{n:03d}"
                add_product(pg, asin, f"Product {n}", "Brand")
                for days, price in ((1, "10.00"), (3, None), (12, "14.50"), (45, "9.00")):
                    add_snapshot(pg, asin, timedelta(days=days, hours=n), price)
                add_alert(pg, asin, read=n % 2 == 0)
        reader.wait_published()
        consume_all(cdc_settings)
        assert_all_right(pg)
        before_grants = grants(pg)

        # what the stream cannot repair: a summary that lost its TOAST value (the "no earlier
        # value" case), a wrong price, a state row lost as if its partition were truncated silently,
        # a wrong day of price history
        pg.execute("UPDATE summaries.product_summary SET bsr_data = NULL WHERE asin = 'B0REBLD000'")
        pg.execute("UPDATE summaries.product_summary SET current_price = 999 WHERE asin = 'B0REBLD001'")
        pg.execute("DELETE FROM summaries.snapshots WHERE asin = 'B0REBLD002'")
        pg.execute("DELETE FROM summaries.product_summary WHERE asin = 'B0REBLD003'")
        pg.execute("UPDATE summaries.price_daily SET high = 1 WHERE asin = 'B0REBLD004'")
        with pytest.raises(AssertionError):
            assert_all_right(pg)

        dry = rebuild(cdc_settings, dry_run=True)
        assert dry.dry_run and dry.summaries == 5
        with pytest.raises(AssertionError):  # a dry run replaces nothing
            assert_all_right(pg)
        assert pg.execute("SELECT to_regnamespace('summaries_rebuild')").fetchone() == (None,)

        result = rebuild(cdc_settings)
        assert result.summaries == 5 and result.state_rows["snapshots"] == 20
        assert_all_right(pg)
        assert grants(pg) == before_grants
        assert pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'summaries_%'").fetchone() == (0,)

        # the live sink writes the swapped-in tables: new changes after the rebuild arrive
        with pg.transaction():
            add_snapshot(pg, "B0REBLD001", timedelta(minutes=5), "7.25")
            pg.execute("DELETE FROM alerts WHERE target_asin = 'B0REBLD002'")
            add_product(pg, "B0REBLD099", "Late", "Brand")
        reader.wait_published()
        consume_all(cdc_settings)
        assert_all_right(pg)
        assert pg.execute(
            "SELECT current_price FROM summaries.product_summary WHERE asin = 'B0REBLD001'"
        ).fetchone()[0] == 7.25  # type: ignore[index]


def test_rebuild_under_a_live_stream_ends_equal_to_the_refreshed_view(
    cdc_settings: Settings, pg: psycopg.Connection, pg_dsn: str
) -> None:
    asins = [f"B0LIVE{n:04d}" for n in range(20)]
    with pg.transaction():
        for n, asin in enumerate(asins):
            add_product(pg, asin, f"Live {n}", "Brand")
    stop = threading.Event()
    written = [0]

    def scrapes() -> None:
        """Scrape events keep landing (the scrape sink's effect on the source tables), changes too."""
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                asin = asins[n % len(asins)]
                add_snapshot(conn, asin, timedelta(days=n % 40, minutes=n), f"{10 + n % 17}.{n % 100:02d}")
                if n % 7 == 0:
                    conn.execute("UPDATE products SET title = %s WHERE asin = %s", (f"title {n}", asin))
                if n % 11 == 0:
                    add_alert(conn, asin, read=n % 2 == 0)
                if n % 13 == 0:
                    conn.execute("DELETE FROM product_snapshots WHERE id = (SELECT min(id) FROM product_snapshots)")
                n += 1
                written[0] = n
                time.sleep(0.01)

    with cdc_reader(cdc_settings) as reader:
        live = LoopThread(build_loop(cdc_settings, "summaries", group=cdc_settings.consumer.group))
        producer = threading.Thread(target=scrapes, daemon=True)
        producer.start()
        try:
            while written[0] < 150:
                time.sleep(0.1)
            result = rebuild(cdc_settings)
            at_swap = written[0]
            while written[0] < at_swap + 100:  # the stream goes on after the swap
                time.sleep(0.1)
        finally:
            stop.set()
            producer.join(30)
        reader.wait_published()
        deadline = time.monotonic() + 60
        # the live consumer (not a new one) reaches the end of the topics
        while not caught_up(cdc_settings, pg, cdc_settings.consumer.group, summaries_source_topics) and not live.failure:
            assert time.monotonic() < deadline, "the live summaries consumer stopped applying after the swap"
            time.sleep(0.2)
        live.stop(30)
    assert not live.failure, live.failure
    assert result.summaries == len(asins)
    assert_all_right(pg)


def test_cli_help_refusal_and_not_migrated(cdc_settings: Settings, pg_dsn: str, pg_admin_dsn: str) -> None:
    runner = CliRunner()
    helped = runner.invoke(app, ["summaries", "rebuild", "--help"])
    assert helped.exit_code == 0 and "--dry-run" in helped.output and "--yes" in helped.output
    refused = runner.invoke(app, ["summaries", "rebuild"], env={"INSIGHTS_PG_DSN": pg_dsn})
    # CliRunner calls the typer app, not main's handler: the error is the exception main turns
    # into its one line and exit code (the ConfirmationRequired's, 2)
    assert isinstance(refused.exception, ConfirmationRequired) and refused.exception.exit_code == 2
    assert "nothing rebuilt" in str(refused.exception) and "pass --yes" in str(refused.exception)
    # the server's maintenance database has no summaries schema
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(make_conninfo(pg_admin_dsn, dbname="postgres"))
    parts.pop("password", None)
    bare = runner.invoke(app, ["summaries", "rebuild", "--yes"], env={"INSIGHTS_PG_DSN": make_conninfo(**parts)})
    assert isinstance(bare.exception, RebuildError), bare.output
    assert "run `insights db migrate`" in str(bare.exception) and "\n" not in str(bare.exception)
