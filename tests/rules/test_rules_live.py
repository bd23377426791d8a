"""The engine reading the stream while it is written: late snapshots, restarts, replays.

* rounds of commits, the engine catching up after each: the alerts stored equal the
  documented semantics applied round by round (``RoundModel``), late snapshots included;
* the engine SIGKILLed mid-stream and restarted: every alert stored once, counters exact;
* the CDC topics replayed from the start (a new group), with and without the engine's
  firings: nothing new is stored.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from core.settings import Settings
from tests.consumers.procs import consumer_env, start_consumer, terminate
from tests.rules.conftest import add_rule, caught_up, consume_rules, store_alerts
from tests.rules.data import add_products, arrivals, churn, insert_rows
from tests.rules.oracle import RoundModel, expected_alerts, stored_alerts
from tests.summaries.conftest import cdc_reader

pytestmark = pytest.mark.integration

PRODUCTS, PER_PRODUCT, ROUNDS = 40, 30, 4


def _watch(pg: psycopg.Connection, asins: list[str]) -> None:
    with pg.transaction():
        group = pg.execute(
            "INSERT INTO competitive_groups (name, main_product_asin) VALUES ('watch', %s) RETURNING id", (asins[0],)
        ).fetchone()[0]  # type: ignore[index]
        pg.cursor().executemany(
            "INSERT INTO competitive_group_members (group_id, competitor_asin) VALUES (%s, %s)",
            [(group, a) for a in asins[: len(asins) // 2]],
        )
        add_rule(pg, "drop", "price_change", str(group), {"direction": "down", "percent": 10}, group=True)
        add_rule(pg, "stock-out", "stock_change", str(group), {"to": "out_of_stock"}, group=True)
        for a in asins[len(asins) // 2:]:
            add_rule(pg, f"{a} below", "price_change", a, {"below": "19.99"})
            add_rule(pg, f"{a} rank", "rank_change", a, {"category": "Electronics", "rank_worse_than": 1000})


def test_live_rounds_with_late_snapshots_fire_what_the_documented_semantics_say(
    rules_settings: Settings, pg: psycopg.Connection
) -> None:
    model = RoundModel()
    rows = arrivals(PRODUCTS, PER_PRODUCT, seed=11)
    size = -(-len(rows) // ROUNDS)
    with cdc_reader(rules_settings) as reader:
        asins = add_products(pg, PRODUCTS)
        _watch(pg, asins)
        for r in range(ROUNDS):
            part = rows[r * size:(r + 1) * size]
            insert_rows(pg, part, seed=r, chunk=500)
            reader.wait_published()
            consume_rules(rules_settings)
            model.round(pg, {(row[0], row[1]) for row in part})
        _counts, touched = churn(pg, seed=3)
        reader.wait_published()
        consume_rules(rules_settings)
        model.round(pg, touched)
    store_alerts(rules_settings)

    got = stored_alerts(pg)
    assert not [k for k, n in Counter(got).items() if n > 1], "an alert was stored twice"
    want = set(model.fired)
    assert set(got) == want, f"missing {sorted(want - set(got))[:3]}, extra {sorted(set(got) - want)[:3]}"
    # the late data mattered: successors were compared again with late predecessors
    assert model.as_successor > 0, "no successor fired against a late predecessor: raise the late share"
    final = expected_alerts(pg)
    print(f"\n{len(got)} alerts; {model.as_successor} fired on a successor of a late snapshot, "
          f"{model.covered} late snapshots covered by their successor's alert; "
          f"{len(final ^ set(got))} differ from an evaluation of the final snapshots alone")


def test_engine_sigkilled_mid_stream_and_restarted_stores_every_alert_once(
    rules_settings: Settings, pg: psycopg.Connection, pg_dsn: str, tmp_path: Path
) -> None:
    group = f"rules-kill-{uuid.uuid4().hex[:8]}"
    with cdc_reader(rules_settings) as reader:
        asins = add_products(pg, 150)
        _watch(pg, asins)
        insert_rows(pg, arrivals(150, 40, seed=5), seed=5, chunk=300)
        reader.wait_published(timeout=120)
    want = expected_alerts(pg)  # everything was committed before the engine started: the final view
    env = consumer_env(rules_settings, pg_dsn, INSIGHTS_BATCH_SIZE="40", INSIGHTS_BATCH_WAIT_MS="20")
    engine = start_consumer("rules", env, group, tmp_path / "rules.log")
    try:
        deadline = time.monotonic() + 120
        while (fired := pg.execute("SELECT count(*) FROM rules.firings").fetchone()[0]) < len(want) // 5:  # type: ignore[index]
            assert engine.poll() is None, (tmp_path / "rules.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the engine fired nothing"
            time.sleep(0.01)
        engine.send_signal(signal.SIGKILL)
        assert engine.wait(10) == -signal.SIGKILL
        at_kill = pg.execute("SELECT count(*) FROM rules.firings").fetchone()[0]  # type: ignore[index]
        assert at_kill < len(want), "the engine finished before the kill; raise the data size"
        engine = start_consumer("rules", env, group, tmp_path / "rules-restarted.log")
        deadline = time.monotonic() + 180
        while not caught_up(rules_settings, pg, group):
            assert engine.poll() is None, (tmp_path / "rules-restarted.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the restarted engine did not catch up"
            time.sleep(0.2)
    finally:
        assert terminate(engine) == 0
    store_alerts(rules_settings)
    got = stored_alerts(pg)
    assert len(got) == len(set(got)) == len(want) and set(got) == want
    assert pg.execute("SELECT sum(trigger_count) FROM alert_rules").fetchone()[0] == len(want)  # type: ignore[index]
    print(f"\nkilled at {fired}..{at_kill} of {len(want)} firings")

    # replay the CDC topics from the start under a new group: nothing new anywhere
    consume_rules(rules_settings, group=f"replay-{uuid.uuid4().hex[:8]}")
    assert pg.execute("SELECT count(*) FROM rules.firings").fetchone()[0] == len(want)  # type: ignore[index]
    # and with the engine's memory gone: the same events again, which the alerts consumer stores once
    pg.execute("TRUNCATE rules.firings")
    again = consume_rules(rules_settings, group=f"replay-{uuid.uuid4().hex[:8]}")
    assert again.totals.stored > 0
    assert pg.execute("SELECT count(*) FROM rules.firings").fetchone()[0] == len(want)  # type: ignore[index]
    store_alerts(rules_settings)
    assert stored_alerts(pg) == sorted(want)
    assert pg.execute("SELECT sum(trigger_count) FROM alert_rules").fetchone()[0] == len(want)  # type: ignore[index]
