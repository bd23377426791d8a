"""The demo's new steps on a test database: rules up front, groups, the price chart."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from consumers.rules.store import invalid_rules
from core.settings import Settings
from insights.chart import price_chart
from insights.demo import DemoRun
from insights.generate.groups import catalogue, competitive_groups

pytestmark = pytest.mark.integration


def test_rules_up_front_name_the_products_the_generator_scrapes_and_groups_follow_the_catalogue(
    settings: Settings, pg: psycopg.Connection
) -> None:
    demo = DemoRun(settings, report=print)
    assert "80 rules on 40 products" in demo.engine_rules()
    demo.engine_rules()  # again: nothing twice
    assert pg.execute("SELECT count(*) FROM alert_rules").fetchone() == (80,)
    products = catalogue(demo.products, demo.SEED)
    targets = {r[0] for r in pg.execute("SELECT target_id FROM alert_rules").fetchall()}
    assert targets == {a for a, _c in products[:40]}
    pg.cursor().executemany("INSERT INTO products (asin, title, category) VALUES (%s, 't', %s)", products)
    assert "competitive groups" in demo.groups()
    defs = competitive_groups(products)
    assert pg.execute("SELECT count(*) FROM competitive_groups").fetchone() == (len(defs),)
    assert pg.execute("SELECT count(*) FROM competitive_group_members").fetchone() == (sum(len(g.members) for g in defs),)
    assert invalid_rules(pg) == {}  # every rule the demo writes validates
    assert len(defs) > 1 and all(g.members for g in defs)


def test_the_price_chart_shows_the_largest_drops_with_their_alerts(pg: psycopg.Connection, tmp_path: Path) -> None:
    start = date(2025, 6, 1)
    closes = {"B00000000A": [100, 100, 60, 65], "B00000000B": [50, 49, 48, 47], "B00000000C": [20, 30, 10, 12]}
    for asin, prices in closes.items():
        pg.execute("INSERT INTO products (asin, title) VALUES (%s, 't')", (asin,))
        for i, p in enumerate(prices):
            pg.execute("INSERT INTO summaries.price_daily (asin, day, open, high, low, close, snapshots) "
                       "VALUES (%s, %s, %s, %s, %s, %s, 1)", (asin, start + timedelta(days=i), p, p, p, p))
    pg.execute(
        "INSERT INTO alerts (event_id, alert_type, target_asin, severity, title, message, new_value, metadata, "
        "triggered_at) VALUES (%s, 'price_change', 'B00000000A', 'high', 't', 'm', '\"60.00\"', "
        "'{\"source\": \"rules-engine\"}', '2025-06-03T10:00:00Z')", (uuid.uuid4(),),
    )
    path = tmp_path / "chart.png"
    shown = price_chart(pg, path, products=2)
    # the alerted product first although C dropped further; then the largest drop
    assert [(a, round(d, 2), n) for a, d, n in shown] == [("B00000000A", 0.4, 1), ("B00000000C", 0.67, 0)]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
