"""A resync (a snapshot republishing every stored snapshot as a read, op 'r') does not fire
history for a rule created after it, fires what the stream never carried, and nothing twice.

Real PostgreSQL, Kafka, CDC reader, ``insights cdc resync`` (full and incremental), the rule
engine and the alerts consumer. The slot is dropped as a failover loses it; a snapshot
committed meanwhile is never streamed and only the resync's read brings it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from core.settings import Settings
from insights.ops.resync import resync
from streams.cdc import incremental as inc
from tests.rules.conftest import add_rule, consume_rules, store_alerts
from tests.summaries.conftest import cdc_reader

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, tzinfo=UTC)
OLD, WATCHED = "B0RESYNC01", "B0RESYNC02"  # history before its rule / a rule that watched live


def _snapshot(pg: psycopg.Connection, asin: str, hours: int, price: str) -> datetime:
    at = T0 + timedelta(hours=hours)
    pg.execute("INSERT INTO product_snapshots (asin, scraped_at, price, availability_status) "
               "VALUES (%s, %s, %s, 'in_stock')", (asin, at, price))
    return at


def _drop_slot(pg: psycopg.Connection, slot: str) -> None:
    """The slot is lost (as on a promoted replica), once the stopped reader let go of it."""
    deadline = time.monotonic() + 15
    while True:
        try:
            pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return
        except psycopg.errors.ObjectInUse:
            assert time.monotonic() < deadline, "the stopped reader's walsender kept the slot"
            time.sleep(0.1)


def _firings(pg: psycopg.Connection) -> list[tuple[int, str, datetime]]:
    return pg.execute("SELECT rule_id, asin, scraped_at FROM rules.firings ORDER BY 1, 2, 3").fetchall()


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_a_resync_fires_what_was_never_streamed_but_not_history_older_than_the_rule(
    rules_settings: Settings, pg: psycopg.Connection, incremental: bool
) -> None:
    settings = rules_settings.replace(cdc_incremental_chunk_size=3)  # several chunks per table
    pg.execute("INSERT INTO products (asin, title) VALUES (%s, 'old'), (%s, 'watched')", (OLD, WATCHED))
    watched = add_rule(pg, "watched drop", "price_change", WATCHED, {"direction": "down", "percent": 10})
    with cdc_reader(settings) as reader:
        # history: a 20 % drop on each product; the watched one fires live (pair 3)
        _snapshot(pg, OLD, 0, "100.00")
        old_drop = _snapshot(pg, OLD, 1, "80.00")
        _snapshot(pg, WATCHED, 0, "100.00")
        watched_drop = _snapshot(pg, WATCHED, 1, "80.00")
        reader.wait_published()
        consume_rules(settings)
        assert _firings(pg) == [(watched, WATCHED, watched_drop)]
        # then a rule that would fire on OLD's history (pair 1)
        late_rule = add_rule(pg, "old drop", "price_change", OLD, {"direction": "down", "percent": 10})
        reader.wait_published()
        consume_rules(settings)
    assert _firings(pg) == [(watched, WATCHED, watched_drop)]  # a rule change re-evaluates nothing

    # the failover: the slot is gone, and what is committed now is never streamed (pair 2)
    _drop_slot(pg, settings.cdc.slot_name)
    unstreamed = _snapshot(pg, OLD, 2, "60.00")
    watched_unstreamed = _snapshot(pg, WATCHED, 2, "70.00")

    result = resync(settings, incremental=incremental)
    registry = CollectorRegistry()
    if incremental:
        assert result.signal is not None
        with cdc_reader(settings) as reader:
            deadline = time.monotonic() + 120
            while True:
                states = inc.progress(pg, settings.cdc.schema_name, settings.cdc.slot_name, result.signal)
                if all(s.status == "done" for s in states):
                    break
                assert time.monotonic() < deadline, f"the incremental snapshot did not finish: {states}"
                time.sleep(0.2)
            reader.wait_published()
            consume_rules(settings, registry=registry)
    else:
        assert result.rows.get("product_snapshots") == 6, result.rows
        consume_rules(settings, registry=registry)
    store_alerts(settings)

    # 1: OLD's drop stored before its rule is not fired; 2: the never-streamed one is, once;
    # 3: WATCHED's live alert is not fired again, its never-streamed drop is
    want = sorted([(watched, WATCHED, watched_drop), (watched, WATCHED, watched_unstreamed),
                   (late_rule, OLD, unstreamed)])
    assert _firings(pg) == want
    alerts = pg.execute("SELECT rule_id, target_asin, triggered_at FROM alerts ORDER BY 1, 2, 3").fetchall()
    assert alerts == want
    assert pg.execute("SELECT id, trigger_count FROM alert_rules ORDER BY id").fetchall() == [
        (watched, 2), (late_rule, 1)]
    assert (late_rule, OLD, old_drop) not in alerts  # the history before the rule
    # what was skipped is counted: OLD's historical drop, matched by the late rule. Once, or twice
    # when its two snapshots were read in different batches (each batch evaluates the pair; a
    # full run on a loaded machine split them); never more (two reads, one pair)
    assert registry.get_sample_value("insights_rules_snapshot_reads_before_rule_total") in (1, 2)

    # the resync again (nothing new happened): nothing new fired
    again = resync(settings, incremental=False)
    assert again.rows.get("product_snapshots") == 6
    consume_rules(settings)
    assert _firings(pg) == want


def test_version_at_moves_with_the_version_only(pg: psycopg.Connection) -> None:
    pg.execute("INSERT INTO products (asin, title) VALUES (%s, 'p')", (OLD,))
    rule = add_rule(pg, "drop", "price_change", OLD, {"direction": "down", "percent": 10})
    created, at = pg.execute("SELECT created_at, version_at FROM alert_rules WHERE id = %s", (rule,)).fetchone()  # type: ignore[misc]
    assert at == created
    # what the alerts consumer and `rules disable` write: not the meaning, not the version
    pg.execute("UPDATE alert_rules SET trigger_count = 5, last_triggered_at = now(), updated_at = now(), "
               "is_active = false WHERE id = %s", (rule,))
    assert pg.execute("SELECT version, version_at FROM alert_rules WHERE id = %s", (rule,)).fetchone() == (1, at)
    pg.execute("UPDATE alert_rules SET conditions = '{\"direction\": \"down\", \"percent\": 5}' WHERE id = %s",
               (rule,))
    version, moved, now = pg.execute(
        "SELECT version, version_at, now() FROM alert_rules WHERE id = %s", (rule,)).fetchone()  # type: ignore[misc]
    assert version == 2 and at < moved <= now


def test_the_backfill_of_version_at(pg: psycopg.Connection) -> None:
    """ddl/0026 on rules that existed before it: replayed here on a copy of its column."""
    pg.execute("INSERT INTO products (asin, title) VALUES (%s, 'p')", (OLD,))
    first = add_rule(pg, "v1", "price_change", OLD, {"percent": 10})
    fired = add_rule(pg, "v2 fired", "price_change", OLD, {"percent": 10})
    quiet = add_rule(pg, "v2 quiet", "price_change", OLD, {"percent": 10})
    pg.execute("UPDATE alert_rules SET created_at = '2025-01-01Z', updated_at = '2025-06-01Z'")
    pg.execute("UPDATE alert_rules SET version = 2 WHERE id IN (%s, %s)", (fired, quiet))
    pg.execute("INSERT INTO rules.firings (rule_id, rule_version, asin, scraped_at, previous_at, event_id, fired_at) "
               "VALUES (%s, 1, %s, '2025-01-02Z', '2025-01-01Z', gen_random_uuid(), '2025-01-02Z'), "
               "(%s, 2, %s, '2025-03-02Z', '2025-03-01Z', gen_random_uuid(), '2025-03-02Z')",
               (fired, OLD, fired, OLD))
    migration = Path(__file__).parents[2] / "ddl" / "0026_alert_rule_version_at.sql"
    with pg.transaction():
        pg.execute("ALTER TABLE alert_rules DROP COLUMN version_at")
        pg.execute(migration.read_text())
    got = dict(pg.execute("SELECT id, version_at FROM alert_rules").fetchall())
    utc = {k: v.astimezone(UTC) for k, v in got.items()}
    assert utc == {first: datetime(2025, 1, 1, tzinfo=UTC),  # version 1: since created_at
                   fired: datetime(2025, 3, 2, tzinfo=UTC),  # its version's first firing
                   quiet: datetime(2025, 6, 1, tzinfo=UTC)}  # no firing: updated_at
