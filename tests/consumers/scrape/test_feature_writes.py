"""product_features are written only when a value changes (issue 17; consumers/scrape/sql.py).

Before, every scrape rewrote every feature of its product (121k feature upserts for 15k
final rows, a third of them changing a value). Now a scrape that confirms the stored value
writes nothing, so ``extracted_at`` is when the value was first seen / last changed; a
changed value is written; and a late scrape never overwrites what a newer one stored.
Rows are compared by ``xmin`` and ``ctid`` (a write of any kind gives the row a new
version), and PostgreSQL's own table counters say the same.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from tests.consumers.conftest import Topics, count, produce, run_until_idle
from tests.consumers.events import scrape

pytestmark = pytest.mark.integration

PRODUCTS, FEATURES = 5, 3


def feature_rows(pg: psycopg.Connection) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = pg.execute(
        "SELECT asin, feature_name, xmin::text, ctid::text, feature_value, extracted_at FROM product_features"
    ).fetchall()
    return {(r[0], r[1]): r[2:] for r in rows}


def table_counters(pg: psycopg.Connection, table: str) -> tuple[int, int, int]:
    pg.execute("SELECT pg_stat_clear_snapshot()")
    row = pg.execute(
        "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass", (table,)
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def wait_for_counters(pg: psycopg.Connection, table: str, ready, timeout: float = 15.0) -> tuple[int, int, int]:
    """The consumer's backend reports its counters when it exits (the loop closed it): wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        counters = table_counters(pg, table)
        if ready(counters) or time.monotonic() > deadline:
            return counters
        time.sleep(0.2)


def consume(settings: Settings, topics: Topics, events: list[Any]) -> None:
    produce(settings, topics.scrape, "product_scraped", events)
    # one record per batch: every scrape reaches PostgreSQL, none is merged away in a batch
    run_until_idle(settings.replace(batch_size=1, batch_wait_ms=20), "scrape", idle=1.0)


def test_confirming_scrapes_write_nothing_and_a_changed_value_is_written(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    consume(settings, topics, [scrape(n, 0, features=FEATURES, feature_value="red") for n in range(PRODUCTS)])
    first = feature_rows(pg)
    assert len(first) == PRODUCTS * FEATURES
    features_before = wait_for_counters(pg, "product_features", lambda c: c[0] >= PRODUCTS * FEATURES)
    products_before = table_counters(pg, "products")

    # six more scrapes of every product, each confirming the same values
    consume(settings, topics, [
        scrape(n, seq, features=FEATURES, feature_value="red") for seq in range(1, 7) for n in range(PRODUCTS)
    ])
    assert count(pg, "SELECT count(*) FROM product_snapshots") == PRODUCTS * 7
    assert feature_rows(pg) == first  # not one feature row was written again
    assert {r[3] for r in first.values()} == {scrape(0, 0).scraped_at}  # first seen
    assert count(pg, "SELECT count(*) FROM products WHERE last_scraped_at = %s", scrape(0, 6).scraped_at) == PRODUCTS
    # PostgreSQL's counters agree: the products were updated six times each, the features never
    products_after = wait_for_counters(pg, "products", lambda c: c[1] >= products_before[1] + PRODUCTS * 6)
    assert products_after[1] - products_before[1] == PRODUCTS * 6
    assert table_counters(pg, "product_features")[1] == features_before[1]

    # a changed value is written, with the scrape that changed it; changing back is a change too
    consume(settings, topics, [scrape(n, 7, features=FEATURES, feature_value="blue") for n in range(PRODUCTS)])
    blue = feature_rows(pg)
    assert all(blue[k][0] != first[k][0] for k in first)  # every row has a new version
    assert {r[2] for r in blue.values()} == {f"blue {i}" for i in range(FEATURES)}
    assert {r[3] for r in blue.values()} == {scrape(0, 7).scraped_at}
    consume(settings, topics, [scrape(n, 8, features=FEATURES, feature_value="red") for n in range(PRODUCTS)])
    red = feature_rows(pg)
    assert {r[2] for r in red.values()} == {f"red {i}" for i in range(FEATURES)}
    assert {r[3] for r in red.values()} == {scrape(0, 8).scraped_at}
    features_after = wait_for_counters(
        pg, "product_features", lambda c: c[1] >= features_before[1] + 2 * PRODUCTS * FEATURES
    )
    assert features_after[1] - features_before[1] == 2 * PRODUCTS * FEATURES


def test_a_late_scrape_never_overwrites_what_a_newer_one_stored(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    consume(settings, topics, [scrape(n, 0, features=FEATURES, feature_value="red") for n in range(PRODUCTS)])
    # scrape 5 confirms the values: nothing is written, extracted_at stays at scrape 0 ...
    consume(settings, topics, [scrape(n, 5, features=FEATURES, feature_value="red") for n in range(PRODUCTS)])
    confirmed = feature_rows(pg)
    # ... so a late scrape 3 with other values is newer than extracted_at, yet older than
    # scrape 5, which showed "red": it must not win. Its one new feature is stored.
    consume(settings, topics, [scrape(n, 3, features=FEATURES + 1, feature_value="green") for n in range(PRODUCTS)])
    after = feature_rows(pg)
    assert {k: v for k, v in after.items() if k in confirmed} == confirmed
    added = {k: v for k, v in after.items() if k not in confirmed}
    assert len(added) == PRODUCTS and {v[2] for v in added.values()} == {f"green {FEATURES}"}
    assert {v[3] for v in added.values()} == {scrape(0, 3).scraped_at}
    # the late scrape is stored as history, and changed no catalog field either
    assert count(pg, "SELECT count(*) FROM product_snapshots") == PRODUCTS * 3
    assert count(pg, "SELECT count(*) FROM products WHERE last_scraped_at = %s", scrape(0, 5).scraped_at) == PRODUCTS
    # a redelivery of the late scrape changes nothing at all
    consume(settings, topics, [scrape(n, 3, features=FEATURES + 1, feature_value="green") for n in range(PRODUCTS)])
    assert feature_rows(pg) == after
    # and a newer scrape with a new value still wins
    consume(settings, topics, [scrape(n, 6, features=FEATURES, feature_value="blue") for n in range(PRODUCTS)])
    newest = feature_rows(pg)
    assert {newest[k][2] for k in confirmed} == {f"blue {i}" for i in range(FEATURES)}
