"""A caught-up reader confirms its position at once, not at the next status interval.

Before, a drained backlog or a big transaction was confirmed to PostgreSQL only by the
periodic status update (``INSIGHTS_CDC_STATUS_INTERVAL_S``, 1 s by default): the slot kept
its WAL and the lag read non-zero up to a second after the last acknowledgement (in the
CDC bench, 0.5-1.0 s of a 4-5 s drain). The interval here is 30 s, so only the caught-up
update can confirm within the test's wait.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc.lsn import parse_lsn
from tests.cdc.conftest import running_reader, wait_for

pytestmark = pytest.mark.integration


def _confirmed(pg: psycopg.Connection[Any], slot: str) -> int:
    row = pg.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                     (slot,)).fetchone()
    assert row is not None and row[0] is not None
    return parse_lsn(row[0])


def test_a_burst_is_confirmed_once_acknowledged_not_at_the_status_interval(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    settings = cdc_settings.replace(cdc_status_interval_s=30.0, cdc_heartbeat_interval_s=30.0)
    table = sql.Identifier(cdc_schema, "products")
    with running_reader(settings) as reader:
        time.sleep(1.0)  # streaming (the changes would wait in the slot otherwise: the same test)
        with pg.transaction():
            pg.execute(
                sql.SQL("INSERT INTO {} (asin, title) SELECT 'P' || g, 't' FROM generate_series(1, 2000) g").format(table)
            )
            inside = parse_lsn(pg.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])  # type: ignore[index]
        started = time.monotonic()
        wait_for(lambda: reader.delivered >= 2000, 20, "2,000 changes acknowledged")
        # the commit ends after ``inside``: its position is confirmed within a fraction of the interval
        wait_for(lambda: _confirmed(pg, settings.cdc.slot_name) > inside, 5,
                 "the slot confirmed past the burst's commit")
        assert time.monotonic() - started < 15, "confirmed no sooner than the 30 s status interval"
        assert reader.tracker.confirmed > inside
