"""``insights cdc resync --incremental``: after a lost slot, the summaries are reset and rebuilt
from an incremental snapshot the reader carries out while it streams.

Real PostgreSQL, Kafka, CDC reader and summaries consumer. The slot is dropped as a failover
loses it; changes made while no slot exists (never streamed) and phantom rows in the
summaries (published, then lost with the old primary) must both be repaired; writes go on
while the chunks are read. The oracle is ``product_summary_view`` after REFRESH and the
GROUP BY of ``price_daily``.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from core.settings import Settings
from insights.ops.resync import resync
from streams.cdc import incremental as inc
from tests.summaries.conftest import cdc_reader, consume_all
from tests.summaries.test_rebuild import assert_all_right
from tests.summaries.test_summaries_cdc import add_alert, add_product, add_snapshot

pytestmark = pytest.mark.integration

PRODUCTS = [f"B0RESYNC{n:02d}" for n in range(30)]


def _writes(pg_dsn: str, stop: threading.Event, done: list[int]) -> None:
    """Scrapes, title changes, alerts and deletes keep landing while the chunks are read."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        n = 0
        while not stop.is_set():
            asin = PRODUCTS[(n * 7) % len(PRODUCTS)]
            add_snapshot(conn, asin, timedelta(days=n % 20, minutes=n), f"{20 + n % 9}.{n % 100:02d}")
            if n % 3 == 0:
                conn.execute("UPDATE products SET title = %s WHERE asin = %s", (f"during {n}", asin))
            if n % 5 == 0:
                add_alert(conn, asin, read=n % 2 == 0)
            if n % 11 == 0:
                conn.execute("DELETE FROM product_snapshots WHERE id = (SELECT min(id) FROM product_snapshots)")
            n += 1
            done[0] = n
            time.sleep(0.01)


def _drop_slot(pg: psycopg.Connection, slot: str) -> None:
    """Drop the slot once the stopped reader's walsender has let go of it."""
    deadline = time.monotonic() + 15
    while True:
        try:
            pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return
        except psycopg.errors.ObjectInUse:
            assert time.monotonic() < deadline, "the stopped reader's walsender kept the slot"
            time.sleep(0.1)


def test_incremental_resync_rebuilds_the_summaries_while_the_reader_streams(
    cdc_settings: Settings, pg: psycopg.Connection, pg_dsn: str
) -> None:
    group = cdc_settings.consumer.group
    settings = cdc_settings.replace(cdc_incremental_chunk_size=7)  # many windows, writes inside them
    with cdc_reader(settings) as reader:
        with pg.transaction():
            for n, asin in enumerate(PRODUCTS):
                add_product(pg, asin, f"Product {n}", "Brand")
                for days, price in ((1, "10.00"), (9, "12.00"), (40, "9.50")):
                    add_snapshot(pg, asin, timedelta(days=days, hours=n), price)
                add_alert(pg, asin)
        reader.wait_published()
        consume_all(settings, group)
        assert_all_right(pg)

    # the slot is lost (as on a promoted replica); what happens meanwhile is never streamed
    _drop_slot(pg, settings.cdc.slot_name)  # the publication stays, as on a promoted replica
    with pg.transaction():
        pg.execute("UPDATE products SET brand = 'Unstreamed' WHERE asin = %s", (PRODUCTS[0],))
        add_snapshot(pg, PRODUCTS[1], timedelta(minutes=1), "1.99")
        pg.execute("DELETE FROM alerts WHERE target_asin = %s", (PRODUCTS[2],))
    # and the summaries hold what only the old primary had (phantoms)
    pg.execute("UPDATE summaries.product_summary SET current_price = 999 WHERE asin = %s", (PRODUCTS[3],))
    pg.execute(
        "INSERT INTO summaries.product_summary (asin, title, is_active) VALUES ('B0PHANTOM1', 'Phantom', true)"
    )
    with pytest.raises(AssertionError):
        assert_all_right(pg)

    result = resync(settings, group=group, incremental=True)
    assert result.summaries_reset and result.signal is not None and not result.rows
    assert pg.execute("SELECT count(*) FROM summaries.product_summary").fetchone() == (0,)

    stop, written = threading.Event(), [0]
    writer = threading.Thread(target=_writes, args=(pg_dsn, stop, written), daemon=True)
    with cdc_reader(settings) as reader:
        writer.start()
        try:
            deadline = time.monotonic() + 120
            while True:
                states = inc.progress(pg, settings.cdc.schema_name, settings.cdc.slot_name, result.signal)
                if all(s.status == "done" for s in states):
                    break
                assert time.monotonic() < deadline, f"the incremental snapshot did not finish: {states}"
                time.sleep(0.2)
            at_end = written[0]
            while written[0] < at_end + 30:  # the stream goes on after the last chunk
                time.sleep(0.05)
        finally:
            stop.set()
            writer.join(30)
        assert at_end > 0, "no write happened while the chunks were read"
        assert {s.table: s.rows_done > 0 for s in states} == {t: True for t in settings.cdc.tables}
        reader.wait_published()
        consume_all(settings, group)
    assert_all_right(pg)
    assert pg.execute("SELECT count(*) FROM summaries.product_summary WHERE asin = 'B0PHANTOM1'").fetchone() == (0,)
    assert pg.execute("SELECT brand FROM summaries.product_summary WHERE asin = %s", (PRODUCTS[0],)).fetchone() == (
        "Unstreamed",)
