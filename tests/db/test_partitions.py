"""Partitions: ahead of time, on demand (2019, 2031), races, DEFAULT split, prune by bounds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from insights.db import partitions
from insights.db.errors import PartitionError
from tests.db.conftest import add_product, add_snapshot, partition_of

pytestmark = pytest.mark.integration

FAR_PAST = datetime(2019, 3, 14, 15, 9, 26, tzinfo=UTC)
FAR_FUTURE = datetime(2031, 7, 1, 0, 0, 0, tzinfo=UTC)


def bounds(conn: psycopg.Connection, table: str) -> list[tuple[datetime, datetime]]:
    return conn.execute(
        "SELECT lower_bound, upper_bound FROM partition_catalog "
        "WHERE parent = %s::regclass AND NOT is_default ORDER BY 1", (table,)
    ).fetchall()


def month_start(at: datetime, shift: int) -> datetime:
    index = at.year * 12 + at.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def test_migrate_leaves_partitions_ahead_of_now(pg: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    for table in ("product_snapshots", "competitive_analyses", "alerts"):
        got = bounds(pg, table)
        assert got[0][0] <= month_start(now, -1)
        assert got[-1][1] >= month_start(now, 4), table  # current month + 3 ahead
        assert all(a[1] == b[0] for a, b in zip(got, got[1:])), f"{table} has gaps"
    daily = bounds(pg, "api_usage_logs")
    assert all(upper - lower == timedelta(days=1) for lower, upper in daily)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert daily[-1][1] >= today + timedelta(days=15)


def test_ensure_creates_further_ahead_when_asked(pg: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    created = partitions.ensure(pg, months_ahead=6, days_ahead=20)
    assert created
    assert bounds(pg, "alerts")[-1][1] >= month_start(now, 7)
    assert partitions.ensure(pg, months_ahead=6, days_ahead=20) == []


def test_bounds_are_utc_whatever_the_session_time_zone(pg: psycopg.Connection) -> None:
    """The seed's date literals meant midnight in the session's TimeZone."""
    pg.execute("SET TimeZone = 'America/Los_Angeles'")
    made = partitions.ensure_partitions_for(pg, "product_snapshots", [datetime(2030, 2, 10, tzinfo=UTC)])
    assert len(made) == 1
    pg.execute("SET TimeZone = 'UTC'")
    assert (datetime(2030, 2, 1, tzinfo=UTC), datetime(2030, 3, 1, tzinfo=UTC)) in bounds(pg, "product_snapshots")


@pytest.mark.parametrize("at", [FAR_PAST, FAR_FUTURE], ids=["2019", "2031"])
def test_ensure_partitions_for_stores_far_past_and_far_future_rows(pg: psycopg.Connection, at: datetime) -> None:
    asin = add_product(pg)
    made = partitions.ensure_partitions_for(pg, "product_snapshots", [at, at + timedelta(minutes=1)])
    assert len(made) == 1
    add_snapshot(pg, asin, at)
    holder = partition_of(pg, "product_snapshots", "scraped_at", at)
    assert holder == made[0] and holder != "product_snapshots_default"
    assert partitions.ensure_partitions_for(pg, "product_snapshots", [at]) == []


@pytest.mark.parametrize("at", [FAR_PAST, FAR_FUTURE], ids=["2019", "2031"])
def test_a_row_without_partition_waits_in_default_and_ensure_moves_it(pg: psycopg.Connection, at: datetime) -> None:
    asin = add_product(pg)
    add_snapshot(pg, asin, at, price=12.34)
    add_snapshot(pg, asin, at + timedelta(days=1), price=56.78)
    assert partition_of(pg, "product_snapshots", "scraped_at", at) == "product_snapshots_default"
    ids_before = pg.execute("SELECT id, price FROM product_snapshots ORDER BY id").fetchall()
    created = partitions.ensure(pg)
    assert any(name.startswith(f"product_snapshots_{at:%Y_%m}") for name in created)
    assert partition_of(pg, "product_snapshots", "scraped_at", at) != "product_snapshots_default"
    assert pg.execute("SELECT id, price FROM product_snapshots ORDER BY id").fetchall() == ids_before
    assert pg.execute("SELECT count(*) FROM product_snapshots_default").fetchone()[0] == 0


def test_rows_for_a_new_partition_are_moved_out_of_default_on_demand(pg: psycopg.Connection) -> None:
    """A consumer asking for a partition whose rows already sit in DEFAULT must not fail."""
    asin = add_product(pg)
    add_snapshot(pg, asin, FAR_FUTURE)
    made = partitions.ensure_partitions_for(pg, "product_snapshots", [FAR_FUTURE + timedelta(days=3)])
    assert len(made) == 1
    assert partition_of(pg, "product_snapshots", "scraped_at", FAR_FUTURE) == made[0]


def test_two_processes_creating_the_same_partition_at_once(pg_dsn: str) -> None:
    start = threading.Barrier(4)
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                start.wait(timeout=10)
                results.append(partitions.ensure_partitions_for(conn, "alerts", [FAR_FUTURE]))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    with psycopg.connect(pg_dsn) as conn:
        covering = conn.execute(
            "SELECT count(*) FROM partition_catalog WHERE parent = 'alerts'::regclass AND NOT is_default "
            "AND lower_bound <= %s AND %s < upper_bound", (FAR_FUTURE, FAR_FUTURE)).fetchone()[0]
    assert covering == 1


def test_daily_table_gets_daily_partitions_on_demand(pg: psycopg.Connection) -> None:
    made = partitions.ensure_partitions_for(pg, "api_usage_logs", [FAR_PAST, FAR_PAST + timedelta(days=2)])
    assert len(made) == 2
    day = FAR_PAST.replace(hour=0, minute=0, second=0, microsecond=0)
    assert (day, day + timedelta(days=1)) in bounds(pg, "api_usage_logs")


def test_naive_timestamps_and_unmanaged_tables_are_refused(pg: psycopg.Connection) -> None:
    with pytest.raises(PartitionError, match="no time zone"):
        partitions.ensure_partitions_for(pg, "alerts", [datetime(2031, 1, 1)])
    with pytest.raises(PartitionError, match="no partition policy"):
        partitions.ensure_partitions_for(pg, "products", [FAR_FUTURE])


def test_prune_goes_by_bounds_not_names(pg: psycopg.Connection) -> None:
    """The seed's drop_old_partitions matched names with LIKE ('_' is a wildcard) and dropped
    with CASCADE: a plain table called alerts_2000_archive went, an old partition with an
    unexpected name stayed."""
    now = datetime(2031, 8, 15, tzinfo=UTC)
    pg.execute("CREATE TABLE alerts_2000_archive (x int)")
    pg.execute("CREATE TABLE old_alerts_with_odd_name PARTITION OF alerts "
               "FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-02-01 00:00+00')")
    kept = partitions.ensure_partitions_for(pg, "alerts", [datetime(2031, 3, 1, tzinfo=UTC)])
    old = partitions.ensure_partitions_for(pg, "alerts", [datetime(2031, 1, 31, tzinfo=UTC)])
    planned = partitions.prune(pg, now=now, dry_run=True)
    alert_names = {p.partition for p in planned if p.parent == "alerts"}
    assert "old_alerts_with_odd_name" in alert_names and old[0] in alert_names
    assert kept[0] not in alert_names  # March 2031 is within 6 months of August 2031
    assert "alerts_default" not in alert_names
    # dry-run changed nothing
    assert pg.execute("SELECT to_regclass('old_alerts_with_odd_name')").fetchone()[0] is not None
    gone = partitions.prune(pg, now=now)
    assert {p.partition for p in gone} == {p.partition for p in planned}
    assert pg.execute("SELECT to_regclass('old_alerts_with_odd_name')").fetchone()[0] is None
    assert pg.execute("SELECT to_regclass('alerts_2000_archive')").fetchone()[0] is not None
    assert pg.execute("SELECT to_regclass(%s)", (kept[0],)).fetchone()[0] is not None
    # competitive_analyses has no retention: never pruned
    assert not [p for p in gone if p.parent == "competitive_analyses"]


def test_prune_refuses_to_cascade_into_a_dependent_view(pg: psycopg.Connection) -> None:
    old = partitions.ensure_partitions_for(pg, "alerts", [FAR_PAST])
    pg.execute(sql.SQL("CREATE VIEW depends_on_old AS SELECT * FROM {}").format(sql.Identifier(old[0])))
    with pytest.raises(PartitionError, match="other objects depend on it"):
        partitions.prune(pg)
    assert pg.execute("SELECT to_regclass('depends_on_old')").fetchone()[0] is not None
    # still attached: the detach rolled back with the failed drop
    assert pg.execute("SELECT count(*) FROM partition_catalog WHERE partition = %s::regclass",
                      (old[0],)).fetchone()[0] == 1


def test_seed_drop_old_partitions_would_drop_a_table_that_is_no_partition(pg: psycopg.Connection) -> None:
    """The seed's function, verbatim, for contrast with test_prune_goes_by_bounds_not_names."""
    pg.execute(SEED_DROP_OLD_PARTITIONS)
    pg.execute("CREATE TABLE alerts_2000_archive (x int)")
    pg.execute("SELECT drop_old_partitions('alerts', 6)")
    assert pg.execute("SELECT to_regclass('alerts_2000_archive')").fetchone()[0] is None


def test_status_lists_bounds_and_counts_default_rows(pg: psycopg.Connection) -> None:
    asin = add_product(pg)
    add_snapshot(pg, asin, FAR_PAST)
    infos = partitions.status(pg)
    default = next(i for i in infos if i.partition == "product_snapshots_default")
    assert default.is_default and default.rows_estimate == 1
    assert {i.parent for i in infos} == {"product_snapshots", "competitive_analyses", "alerts", "api_usage_logs"}
    assert all(i.lower is not None and i.upper is not None for i in infos if not i.is_default)


SEED_DROP_OLD_PARTITIONS = """
CREATE OR REPLACE FUNCTION drop_old_partitions(table_name text, months_to_keep integer)
RETURNS void AS $$
DECLARE
    partition_record record;
    cutoff_date date;
BEGIN
    cutoff_date := date_trunc('month', CURRENT_DATE) - (months_to_keep || ' months')::interval;

    FOR partition_record IN
        SELECT schemaname, tablename
        FROM pg_tables
        WHERE tablename LIKE table_name || '_%'
        AND tablename < table_name || '_' || to_char(cutoff_date, 'YYYY_MM')
    LOOP
        EXECUTE 'DROP TABLE IF EXISTS ' || partition_record.tablename || ' CASCADE';
    END LOOP;
END;
$$ LANGUAGE plpgsql;
"""
