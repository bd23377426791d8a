"""The engine's rule cache on the real stream: counter updates do not reload it, rule changes do.

One engine runs through every phase (its cache warm from the first batch): the alerts
it fired are stored by the alerts consumer, whose ``trigger_count`` updates come back
through the CDC stream as changes of ``alert_rules``; then a rule's conditions change
(a new version), another is renamed, the first is disabled. Each of those must reach the
next evaluation, and only they may cost a reload (``insights_rules_cache_reloads_total``).
The pure side (which envelope is held by the cache): tests/rules/test_cache.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from consumers.registry import build_loop
from core.settings import Settings
from tests.loop_thread import LoopThread
from tests.rules.conftest import add_rule, caught_up, store_alerts
from tests.rules.data import START, add_products, ensure_months
from tests.summaries.conftest import cdc_reader

pytestmark = pytest.mark.integration


def _snapshot(pg: psycopg.Connection, asin: str, hours: int, price: str) -> None:
    pg.execute(
        "INSERT INTO product_snapshots (asin, scraped_at, price, availability_status) VALUES (%s, %s, %s, 'in_stock')",
        (asin, START + timedelta(hours=hours), Decimal(price)),
    )


def _firings(pg: psycopg.Connection, rule_id: int) -> list[tuple[int, str]]:
    return [(v, a.isoformat()) for v, a in pg.execute(
        "SELECT rule_version, scraped_at FROM rules.firings WHERE rule_id = %s ORDER BY scraped_at", (rule_id,)
    ).fetchall()]


def test_counter_updates_leave_the_cache_and_rule_changes_reach_the_next_evaluation(
    rules_settings: Settings, pg: psycopg.Connection
) -> None:
    registry = CollectorRegistry()
    group = rules_settings.consumer.group

    def reloads() -> float:
        return registry.get_sample_value("insights_rules_cache_reloads_total") or 0.0

    with cdc_reader(rules_settings) as reader:
        ensure_months(pg)
        a, b = add_products(pg, 2)
        rule_a = add_rule(pg, "a drop", "price_change", a, {"direction": "down", "percent": 10})
        rule_b = add_rule(pg, "b drop", "price_change", b, {"direction": "down", "percent": 10})
        for asin in (a, b):
            _snapshot(pg, asin, 0, "100.00")
            _snapshot(pg, asin, 1, "85.00")  # -15 %: both fire
        engine = LoopThread(build_loop(rules_settings, "rules", group=group, registry=registry))
        try:
            def settle(what: str, also: Callable[[], bool] = lambda: True) -> None:
                reader.wait_published()
                deadline = time.monotonic() + 120
                while not (caught_up(rules_settings, pg, group) and also()):
                    assert engine.running(), f"the engine stopped: {engine.failure}"
                    assert time.monotonic() < deadline, f"engine not caught up after {what}"
                    time.sleep(0.1)

            settle("the first drops")
            assert [len(_firings(pg, r)) for r in (rule_a, rule_b)] == [1, 1]
            assert reloads() == 1  # the first batch loads the cache

            # the alerts consumer stores both alerts and counts them on their rules: two
            # changes of alert_rules the engine reads, and holds without a reload
            store_alerts(rules_settings)
            assert pg.execute("SELECT array_agg(trigger_count ORDER BY id) FROM alert_rules").fetchone() == ([1, 1],)
            settle("the counter updates")
            assert reloads() == 1, "a trigger_count update reloaded every rule"

            # a new version of rule a: -17.6 % is below its new 50 %, while b (10 %) fires
            pg.execute("UPDATE alert_rules SET conditions = '{\"direction\": \"down\", \"percent\": 50}' "
                       "WHERE id = %s", (rule_a,))
            for asin in (a, b):
                _snapshot(pg, asin, 2, "70.00")
            settle("the new version", lambda: len(_firings(pg, rule_b)) == 2)
            assert reloads() == 2
            assert _firings(pg, rule_a) == [(1, (START + timedelta(hours=1)).isoformat())]

            # a rename reaches the alert the rule fires next
            pg.execute("UPDATE alert_rules SET name = 'b renamed' WHERE id = %s", (rule_b,))
            _snapshot(pg, b, 3, "50.00")
            settle("the rename", lambda: len(_firings(pg, rule_b)) == 3)
            assert reloads() == 3

            # disabled: a -71 % drop on a fires nothing
            pg.execute("UPDATE alert_rules SET is_active = false WHERE id = %s", (rule_a,))
            _snapshot(pg, a, 4, "20.00")
            _snapshot(pg, b, 4, "10.00")  # b still fires: the batch was evaluated
            settle("the disable", lambda: len(_firings(pg, rule_b)) == 4)
            assert reloads() == 4
            assert len(_firings(pg, rule_a)) == 1
        finally:
            engine.stop(60)
        engine.raise_failure()
    store_alerts(rules_settings)
    names = pg.execute("SELECT metadata->>'rule_name', count(*) FROM alerts WHERE rule_id = %s "
                       "GROUP BY 1 ORDER BY 1", (rule_b,)).fetchall()
    assert names == [("b drop", 2), ("b renamed", 2)]
