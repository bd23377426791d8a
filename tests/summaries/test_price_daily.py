"""Done-when: summaries.price_daily equals a GROUP BY over product_snapshots.

Randomized snapshots (late and out of order, several monthly partitions) stream through
the CDC reader to the summaries consumer; then updates, deletes and moves across
partitions; then a truncate. After each round ``price_daily`` equals the same
aggregate computed over the source table, and a replay of the CDC topics from the
start (a new group) rewrites nothing. The CI size runs in seconds; the issue's size
(100,000 snapshots over 1,000 products and four months) is marked slow.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from tests.rules.data import add_products, arrivals, churn, insert_rows
from tests.summaries.conftest import cdc_reader, consume_all

pytestmark = pytest.mark.integration

ORACLE = """
SELECT asin, (scraped_at AT TIME ZONE 'UTC')::date AS day,
       (array_agg(price ORDER BY scraped_at) FILTER (WHERE price IS NOT NULL))[1],
       max(price), min(price),
       (array_agg(price ORDER BY scraped_at DESC) FILTER (WHERE price IS NOT NULL))[1],
       count(*)
FROM product_snapshots GROUP BY 1, 2 ORDER BY 1, 2
"""
STORED = "SELECT asin, day, open, high, low, close, snapshots FROM summaries.price_daily ORDER BY 1, 2"


def assert_equal(pg: psycopg.Connection) -> int:
    want: list[Any] = pg.execute(ORACLE).fetchall()
    got: list[Any] = pg.execute(STORED).fetchall()
    assert len(got) == len(want), f"{len(got)} days stored, {len(want)} in the source"
    for w, g in zip(want, got, strict=True):
        assert g == w, f"stored {g} != source {w}"
    return len(want)


@pytest.mark.parametrize(("products", "per_product"), [
    pytest.param(60, 40, id="2400-snapshots"),
    pytest.param(1000, 100, id="100000-snapshots", marks=pytest.mark.slow),
])
def test_price_daily_equals_a_group_by_over_the_snapshots(
    cdc_settings: Settings, pg: psycopg.Connection, products: int, per_product: int
) -> None:
    with cdc_reader(cdc_settings) as reader:
        add_products(pg, products)
        # several snapshots a day, so that open/close/high/low differ
        insert_rows(pg, arrivals(products, per_product * 3, seed=products)[: products * per_product], seed=1)
        reader.wait_published(timeout=600)
        consume_all(cdc_settings, timeout=900)
        days = assert_equal(pg)
        assert days > products, "too few days to mean anything"

        counts, _touched = churn(pg, seed=products, fraction=0.02)
        assert counts["updated"] and counts["deleted"] and counts["moved"], counts
        reader.wait_published(timeout=300)
        consume_all(cdc_settings, timeout=600)
        assert_equal(pg)

        replayed_before = pg.execute("SELECT * FROM summaries.price_daily ORDER BY 1, 2").fetchall()
        consume_all(cdc_settings, group=f"replay-{uuid.uuid4().hex[:8]}", timeout=900)
        assert pg.execute("SELECT * FROM summaries.price_daily ORDER BY 1, 2").fetchall() == replayed_before

        with pg.transaction():  # a truncate, then new rows in the same transaction: they stay
            pg.execute("TRUNCATE product_snapshots")
            insert_rows(pg, arrivals(3, 5, seed=99), seed=2)
        reader.wait_published()
        consume_all(cdc_settings)
    assert assert_equal(pg) > 0
