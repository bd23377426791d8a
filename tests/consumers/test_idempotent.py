"""Done-when #1: every event twice, shuffled within partitions: exact rows, newest state wins."""

from __future__ import annotations

import psycopg
import pytest

from core.settings import Settings
from tests.consumers.conftest import Topics, count, produce, run_until_idle
from tests.cli.helpers import run_cli
from tests.consumers.events import alert, asin, scrape, shuffled
from tests.consumers.procs import consumer_env

pytestmark = pytest.mark.integration

PRODUCTS = 40
SCRAPES = 5  # per product
FEATURES = 2  # per scrape, same names every scrape: newest extraction must win


def test_scrape_duplicates_and_shuffled_order_end_in_the_newest_state(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    events = [scrape(n, seq, features=FEATURES) for n in range(PRODUCTS) for seq in range(SCRAPES)]
    # every event twice, and the whole stream shuffled: per product (= per partition key)
    # the scrapes arrive out of order, and duplicates land in different batches
    produce(settings, topics.scrape, "product_scraped", shuffled(events + events))
    small_batches = settings.replace(batch_size=37)
    loop = run_until_idle(small_batches, "scrape")

    assert count(pg, "SELECT count(*) FROM products") == PRODUCTS
    assert count(pg, "SELECT count(*) FROM product_snapshots") == PRODUCTS * SCRAPES
    assert count(pg, "SELECT count(DISTINCT event_id) FROM product_snapshots") == PRODUCTS * SCRAPES
    assert count(pg, "SELECT count(*) FROM product_features") == PRODUCTS * FEATURES
    newest = SCRAPES - 1
    stale = pg.execute(
        "SELECT asin, title, last_scraped_at FROM products WHERE title <> 'Product ' || "
        "(substr(asin, 2)::int)::text || ' as of scrape ' || %s::text",
        (newest,),
    ).fetchall()
    assert stale == [], f"products not in the newest scrape's state: {stale[:3]}"
    expected_ts = scrape(0, newest).scraped_at
    assert count(pg, "SELECT count(*) FROM products WHERE last_scraped_at = %s", expected_ts) == PRODUCTS
    old_features = count(pg, "SELECT count(*) FROM product_features WHERE feature_value NOT LIKE %s", f"% at {newest}")
    assert old_features == 0
    # the loop saw all 2x events; half of them changed nothing, and its counters say so:
    # PostgreSQL's own answers (RETURNING xmax = 0, DO NOTHING's row count), not the events
    totals = loop.totals
    assert totals.consumed == 2 * PRODUCTS * SCRAPES
    assert totals.dead_letters == 0
    assert totals.stored == PRODUCTS * SCRAPES  # one per distinct scrape
    assert totals.already_stored == PRODUCTS * SCRAPES  # every duplicate
    distinct_rows = PRODUCTS + PRODUCTS * SCRAPES + PRODUCTS * FEATURES  # the tables started empty
    assert totals.inserted == distinct_rows
    # a newer scrape after an older one updates its product and features; never more than that
    assert 0 < totals.updated <= (PRODUCTS + PRODUCTS * FEATURES) * (SCRAPES - 1)
    assert totals.written == 0
    # offsets stored with the rows: the next offset of each partition is its end
    assert count(pg, "SELECT sum(next_offset) FROM consumer_offsets WHERE consumer_group = %s",
                 settings.consumer.group) == 2 * PRODUCTS * SCRAPES


def test_replaying_the_topic_in_a_new_group_changes_nothing(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    events = [scrape(n, seq) for n in range(10) for seq in range(3)]
    produce(settings, topics.scrape, "product_scraped", events)
    run_until_idle(settings, "scrape")
    before = pg.execute("SELECT asin, title, last_scraped_at, updated_at FROM products ORDER BY asin").fetchall()
    # a second group reads everything again: every write must be a no-op
    again = settings.replace(consumer_group=settings.consumer.group + "-replay")
    loop = run_until_idle(again, "scrape")
    assert loop.totals.consumed == 30
    # a replay stores nothing new, and says so: 0 inserted, 0 updated, 30 already stored
    assert (loop.totals.stored, loop.totals.already_stored) == (0, 30)
    assert (loop.totals.inserted, loop.totals.updated) == (0, 0)
    assert pg.execute("SELECT asin, title, last_scraped_at, updated_at FROM products ORDER BY asin").fetchall() == before
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 30


def test_alerts_redelivered_are_stored_and_counted_once(
    settings: Settings, topics: Topics, pg: psycopg.Connection, seed_rule
) -> None:
    seed_rule(1)
    seed_rule(2)
    produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(3)])
    run_until_idle(settings, "scrape", idle=2)
    alerts = [alert(1 + (seq % 2), n, seq, target=asin(n)) for n in range(3) for seq in range(6)]
    alerts.append(alert(None, 9, 1))  # a group alert with no rule: stored, counts nothing
    produce(settings, topics.alerts, "alert_triggered", shuffled(alerts + alerts + alerts[:5]))
    loop = run_until_idle(settings.replace(batch_size=7), "alerts")

    assert count(pg, "SELECT count(*) FROM alerts") == len(alerts)
    counts = dict(pg.execute("SELECT id, trigger_count FROM alert_rules ORDER BY id").fetchall())
    assert counts == {1: 9, 2: 9}
    last = dict(pg.execute("SELECT id, last_triggered_at FROM alert_rules").fetchall())
    assert last[1] == max(a.triggered_at for a in alerts if a.rule_id == 1)
    assert last[2] == max(a.triggered_at for a in alerts if a.rule_id == 2)
    assert loop.totals.dead_letters == 0
    assert loop.totals.stored == len(alerts)
    assert loop.totals.already_stored == len(alerts) + 5
    assert loop.totals.inserted == len(alerts)
    # the rule counters: each rule's row bumped once per batch that inserted one of its alerts
    assert 2 <= loop.totals.updated <= len(alerts)


def test_replayed_alerts_say_0_inserted_and_all_already_stored(
    settings: Settings, topics: Topics, pg: psycopg.Connection, seed_rule
) -> None:
    # the report: a replay of 3,900 stored alerts said "3900 stored, 0 already stored"
    seed_rule(1)
    produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(3)])
    run_until_idle(settings, "scrape", idle=2)  # the alerts' products
    alerts = [alert(1, n, seq, target=asin(n)) for n in range(3) for seq in range(4)]
    produce(settings, topics.alerts, "alert_triggered", alerts)
    first = run_until_idle(settings, "alerts", idle=2)
    assert (first.totals.stored, first.totals.inserted, first.totals.dead_letters) == (len(alerts), len(alerts), 0)
    replay = settings.replace(consumer_group=settings.consumer.group + "-replay")
    done = run_cli("consume", "alerts", "--exit-when-idle", "3", env=consumer_env(replay), timeout=120)
    assert done.returncode == 0, done.stderr
    assert (
        f"alerts: stopped cleanly: {len(alerts)} events: 0 stored, {len(alerts)} already stored, 0 dead-lettered "
        "(0 rows inserted, 0 updated)"
    ) in done.stdout
    assert count(pg, "SELECT count(*) FROM alerts") == len(alerts)
    assert count(pg, "SELECT trigger_count FROM alert_rules WHERE id = 1") == len(alerts)
