"""The scrape sink's updates of products and product_features are HOT (ddl/0024, issue 17).

A HOT update puts the new row version on the same page and adds no index entry. It needs
two things: no indexed column changes (0024 dropped the seed's indexes on
``last_updated_at`` and ``extracted_at``, which every write changes), and room on the page
(0024's fillfactor). PostgreSQL's own counters say whether it happened.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from core.settings import Settings
from tests.consumers.conftest import Topics, produce, run_until_idle
from tests.consumers.events import scrape

pytestmark = pytest.mark.integration

PRODUCTS, SCRAPES, FEATURES = 200, 12, 4


def settled_counters(pg: psycopg.Connection, table: str, timeout: float = 15.0) -> tuple[int, int]:
    """(n_tup_upd, n_tup_hot_upd) once the consumer's backend has reported them (at its exit)."""
    deadline = time.monotonic() + timeout
    last, same = None, 0
    while time.monotonic() < deadline:
        pg.execute("SELECT pg_stat_clear_snapshot()")
        row = pg.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass", (table,)
        ).fetchone()
        assert row is not None
        current = (int(row[0]), int(row[1]))
        same = same + 1 if current == last and current[0] > 0 else 0
        if same >= 3:
            return current
        last = current
        time.sleep(0.3)
    raise AssertionError(f"{table}: counters did not settle, last {last}")


def test_repeated_scrapes_update_products_and_features_hot(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    # every scrape is newer than the last and changes every feature value ("value i at seq"),
    # so each one updates its product and all its features
    produce(settings, topics.scrape, "product_scraped",
            [scrape(n, seq, features=FEATURES) for seq in range(SCRAPES) for n in range(PRODUCTS)])
    # a batch updates an eighth of the products' rows (the ingest bench: up to 0.6, a
    # catalog of millions far fewer)
    run_until_idle(settings.replace(batch_size=PRODUCTS // 8, batch_wait_ms=20), "scrape", idle=1.0)
    # measured 89-97% and 83-92% HOT (0% with the seed's indexes): a page runs out of room
    # when a batch updates more of its rows than the fillfactor left room for, or when
    # pruning has not yet freed the versions of the previous batch
    for table, rows, share in (("products", PRODUCTS, 0.8), ("product_features", PRODUCTS * FEATURES, 0.7)):
        updated, hot = settled_counters(pg, table)
        assert updated >= rows * (SCRAPES // 2), (table, updated)  # batches merge some scrapes, not most
        assert hot >= share * updated, (table, updated, hot)
