"""The summaries consumer's batch statements look their keys up by index, whatever the table's size.

Each batch joins a few hundred keys to a state table. With the planner's spinning-disk
default ``random_page_cost = 4`` PostgreSQL planned several of them as a hash join over a
whole table of ~10-100k rows, so a batch cost more the more the tables held: at 2,000
events/s the summaries' backend CPU per event grew through a run and the summary path fell
seconds behind (BENCHMARKS.md "Downstream latency"). The stack, the compose file and the
testcontainers fixture run PostgreSQL with ``random_page_cost = 1.1`` (the working set is in
memory); these tests plan each statement on tables of production-like proportions and fail
on a sequential scan of a state table. And the state rows every scrape rewrites are
updated heap-only (HOT), without a new index entry (ddl/0027).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumers.summaries import price_daily
from consumers.summaries import sql as summaries_sql
from insights.stack.postgres import RANDOM_PAGE_COST

pytestmark = pytest.mark.integration

PRODUCTS = 10_000
SNAPSHOTS_PER_PRODUCT = 6
#: updates of every product row before the plans (a live table between two autovacuums)
PRODUCT_UPDATES = 4
BATCH = 200
STATE_TABLES = ("products", "snapshots", "price_daily", "product_summary", "alerts")


@pytest.fixture
def filled(pg: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The state tables as the summaries consumer leaves them an hour into a 2,000 events/s run:
    10,000 products, each row updated a few times since the last vacuum (every scrape updates its
    product), 6 snapshots per product in the last 30 days, statistics fresh."""
    pg.execute(
        "INSERT INTO summaries.products (asin, title, category, is_active, commit_lsn, lsn, changed_at) "
        "SELECT 'B' || lpad(g::text, 9, '0'), 'title ' || g, 'Kitchen', true, g, g, now() "
        "FROM generate_series(1, %s) g",
        (PRODUCTS,),
    )
    pg.execute(
        "INSERT INTO summaries.snapshots (id, scraped_at, asin, price, rating, review_count, bsr_data, "
        "availability_status, commit_lsn, lsn, changed_at) "
        "SELECT g, now() - (g %% 29) * interval '1 day' - (g %% 86400) * interval '1 second', "
        "'B' || lpad((g %% %s + 1)::text, 9, '0'), (g %% 5000) / 100.0 + 1, 4.5, g %% 900, '{\"x\": 1}', "
        "'in_stock', g, g, now() FROM generate_series(1, %s) g",
        (PRODUCTS, PRODUCTS * SNAPSHOTS_PER_PRODUCT),
    )
    pg.execute(
        "INSERT INTO summaries.price_daily (asin, day, open, high, low, close, snapshots) "
        "SELECT asin, (scraped_at AT TIME ZONE 'UTC')::date, min(price), max(price), min(price), max(price), "
        "count(*) FROM summaries.snapshots GROUP BY 1, 2"
    )
    pg.execute(
        "INSERT INTO summaries.product_summary (asin, title, category, is_active, current_price) "
        "SELECT asin, title, category, is_active, 10 FROM summaries.products"
    )
    pg.execute(
        "INSERT INTO summaries.alerts (id, triggered_at, target_asin, is_read, is_resolved, commit_lsn, lsn, "
        "changed_at) SELECT g, now(), 'B' || lpad((g * 7 %% %s + 1)::text, 9, '0'), false, false, g, g, now() "
        "FROM generate_series(1, %s) g",
        (PRODUCTS, PRODUCTS // 4),
    )
    for _ in range(PRODUCT_UPDATES):
        pg.execute("UPDATE summaries.products SET lsn = lsn + 1, changed_at = now()")
    pg.execute("ANALYZE summaries.products, summaries.snapshots, summaries.price_daily, "
               "summaries.product_summary, summaries.alerts")
    yield pg


def _batch(pg: psycopg.Connection) -> dict[str, Any]:
    """A batch's keys: BATCH snapshots spread over the table, their products and days."""
    rows = pg.execute(
        "SELECT id, scraped_at, asin FROM summaries.snapshots WHERE id %% %s = 0 ORDER BY id LIMIT %s",
        ((PRODUCTS * SNAPSHOTS_PER_PRODUCT) // BATCH, BATCH),
    ).fetchall()
    assert len(rows) == BATCH
    return {
        "ids": [r[0] for r in rows],
        "ats": [r[1] for r in rows],
        "asins": [r[2] for r in rows],
        "days": [r[1].astimezone(UTC).date() for r in rows],
    }


def _apply_rows(keys: dict[str, Any], table: str) -> str:
    """The JSON rows an apply statement takes (consumers/summaries/store._rows_json's shape)."""
    commit = datetime.now(UTC) + timedelta(seconds=1)
    out = []
    for i, (id_, at, asin) in enumerate(zip(keys["ids"], keys["ats"], keys["asins"], strict=True)):
        doc: dict[str, Any] = {"asin": asin, "title": "t", "brand": None, "category": "Kitchen", "is_active": True}
        if table == "product_snapshots":
            doc = {"id": id_, "scraped_at": at.isoformat(), "asin": asin, "price": 9.99, "rating": 4.5,
                   "review_count": 3, "bsr_data": "{}", "availability_status": "in_stock"}
        doc.update({"toast": [], "del": False, "cl": 10**12 + i, "l": 10**12 + i, "ct": commit.isoformat()})
        out.append(doc)
    return json.dumps(out)


def _statements(keys: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    apply = {name: summaries_sql.apply_statement(t) for name, t in summaries_sql.STATE_TABLES.items()}
    return {
        "recompute": (summaries_sql.RECOMPUTE, {"asins": sorted(set(keys["asins"]))}),
        "price_daily days": (price_daily.DAYS, {"asins": keys["asins"], "days": keys["days"]}),
        "price_daily touched_before": (price_daily.TOUCHED_BEFORE, {"ids": keys["ids"], "ats": keys["ats"]}),
        "apply products": (apply["products"], {"rows": _apply_rows(keys, "products"), "source": "products"}),
        "apply snapshots": (
            apply["product_snapshots"],
            {"rows": _apply_rows(keys, "product_snapshots"), "source": "product_snapshots"},
        ),
    }


def _seq_scans(pg: psycopg.Connection, statement: Any, params: dict[str, Any], random_page_cost: float) -> set[str]:
    """The state tables a plan of ``statement`` reads whole (planned, rolled back, never run)."""
    with pg.transaction(force_rollback=True):
        pg.execute("SET LOCAL TimeZone = 'UTC'")
        pg.execute(f"SET LOCAL random_page_cost = {float(random_page_cost)}")  # a float
        query = statement.as_string(pg) if not isinstance(statement, str) else statement
        plan = pg.execute("EXPLAIN (VERBOSE, FORMAT JSON) " + query, params).fetchone()[0]  # type: ignore[index]

    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") == "Seq Scan" and node.get("Schema") == "summaries" \
                and node.get("Relation Name") in STATE_TABLES:
            found.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_the_project_setting_is_what_the_server_runs(pg: psycopg.Connection) -> None:
    """Every way of starting PostgreSQL here sets it; a server started otherwise is named."""
    value = float(pg.execute("SELECT current_setting('random_page_cost')").fetchone()[0])  # type: ignore[index]
    assert value == RANDOM_PAGE_COST, (
        f"this PostgreSQL runs random_page_cost = {value}; the project is tuned for {RANDOM_PAGE_COST} "
        "(insights/stack/postgres.py SERVER_CONF): set it in postgresql.conf"
    )


def test_batch_statements_use_indexes(filled: psycopg.Connection) -> None:
    keys = _batch(filled)
    scans = {name: _seq_scans(filled, stmt, params, RANDOM_PAGE_COST)
             for name, (stmt, params) in _statements(keys).items()}
    assert scans == {name: set() for name in scans}, f"whole-table scans per statement: {scans}"


def test_the_spinning_disk_default_scans_whole_tables(filled: psycopg.Connection) -> None:
    """Why the setting matters: with 4 some of the same statements read whole state tables."""
    keys = _batch(filled)
    scans = {name: _seq_scans(filled, stmt, params, 4.0) for name, (stmt, params) in _statements(keys).items()}
    assert any(scans.values()), f"no whole-table scan with random_page_cost = 4: {scans}"


def _hot_share(pg: psycopg.Connection, table: str) -> float:
    pg.execute("SELECT pg_stat_force_next_flush()")
    pg.execute("SELECT 1")  # the flush happens when this backend next goes idle
    row = pg.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = 'summaries' AND relname = %s",
        (table,),
    ).fetchone()
    assert row is not None and row[0] > 0, f"no update of summaries.{table} counted"
    return row[1] / row[0]


def test_product_state_updates_are_hot(pg: psycopg.Connection) -> None:
    """Every scrape rewrites its product's state row: those updates are heap-only (ddl/0027).

    With 0015's tombstone index on changed_at, a column every write moves, none could be."""
    apply = summaries_sql.apply_statement(summaries_sql.STATE_TABLES["products"])
    asins = [f"B{n:09d}" for n in range(1000)]
    commit = datetime.now(UTC)
    version = 0

    def write(batch: list[str]) -> None:
        nonlocal version
        docs = []
        for asin in batch:
            version += 1
            docs.append({"asin": asin, "title": f"t{version}", "brand": None, "category": "Kitchen",
                         "is_active": True, "toast": [], "del": False, "cl": version, "l": version,
                         "ct": (commit + timedelta(microseconds=version)).isoformat()})
        with pg.transaction():
            pg.execute(apply, {"rows": json.dumps(docs), "source": "products"})

    write(asins)
    for start in range(0, 2000, 100):  # batches touching a tenth of the products, as live ones do
        write([asins[(start + i * 7) % len(asins)] for i in range(100)])
    share = _hot_share(pg, "products")
    assert share >= 0.5, f"only {share:.0%} of summaries.products updates were HOT"
