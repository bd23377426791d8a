"""Done-when: the alerts the engine fires equal an independent evaluation over the final snapshots.

Randomized data (late and out-of-order snapshots, updates, deletes, moves across monthly
partitions) is committed while the CDC reader streams it; the engine then reads the
whole stream and the alerts consumer stores what it published. The set of stored
alerts equals what ``tests/rules/oracle.py`` computes from the final rows, each alert once,
and every rule's trigger_count equals its number of alerts.

The CI size runs in seconds; the issue's size (100,000 snapshots over 1,000 products and
four months) is marked slow.
"""

from __future__ import annotations

import time
from collections import Counter

import psycopg
import pytest

from consumers.rules.conditions import event_id
from core.settings import Settings
from tests.rules.conftest import add_rule, consume_rules, store_alerts
from tests.rules.data import add_products, churn, seed_market
from tests.rules.oracle import expected_alerts, stored_alerts
from tests.summaries.conftest import cdc_reader

pytestmark = pytest.mark.integration

SIZES = [
    pytest.param(60, 40, id="2400-snapshots"),
    pytest.param(1000, 100, id="100000-snapshots", marks=pytest.mark.slow),
]


def _rules(pg: psycopg.Connection, asins: list[str]) -> None:
    with pg.transaction():
        group = pg.execute(
            "INSERT INTO competitive_groups (name, main_product_asin) VALUES ('watch', %s) RETURNING id", (asins[0],)
        ).fetchone()[0]  # type: ignore[index]
        members = asins[1: max(3, len(asins) // 3)]
        pg.cursor().executemany(
            "INSERT INTO competitive_group_members (group_id, competitor_asin, is_active) VALUES (%s, %s, %s)",
            [(group, a, i % 7 != 0) for i, a in enumerate(members)],  # some members inactive
        )
        gid = str(group)
        add_rule(pg, "group drop", "price_change", gid, {"direction": "down", "percent": 10}, group=True)
        add_rule(pg, "group stock-out", "stock_change", gid, {"to": "out_of_stock"}, group=True)
        add_rule(pg, "group rank", "rank_change", gid, {"category": "Electronics", "rank_worse_than": 1000}, group=True)
        for a in asins[::5]:
            add_rule(pg, f"{a} below", "price_change", a, {"below": "19.99"})
            add_rule(pg, f"{a} rating", "rating_change", a, {"direction": "down", "amount": "0.3"})
            add_rule(pg, f"{a} pricey rise", "price_change", a, {"direction": "up", "percent": 15, "min_price": "50"})
        pg.execute("INSERT INTO alert_rules (name, rule_type, target_type, target_id, conditions, is_active) "
                   "VALUES ('disabled', 'price_change', 'group', %s, '{\"percent\": 1}', false)", (gid,))


@pytest.mark.parametrize(("products", "per_product"), SIZES)
def test_fired_alerts_equal_an_independent_evaluation_of_the_final_snapshots(
    rules_settings: Settings, pg: psycopg.Connection, products: int, per_product: int
) -> None:
    started = time.monotonic()
    with cdc_reader(rules_settings) as reader:
        # the products, then the rules and groups, then the snapshots, then the churn: all in the stream
        asins = add_products(pg, products)
        _rules(pg, asins)
        seed_market(pg, products, per_product, seed=products)
        changed, _touched = churn(pg, seed=products)
        reader.wait_published(timeout=600)
    loop = consume_rules(rules_settings, timeout=900)
    assert loop.totals.dead_letters == 0
    store_alerts(rules_settings, timeout=600)

    want = expected_alerts(pg)
    got = stored_alerts(pg)
    assert len(want) > products // 2, "the data fired too few alerts to mean anything"
    assert changed["deleted"] and changed["updated"] and changed["moved"], changed
    repeats = [k for k, n in Counter(got).items() if n > 1]
    assert not repeats, f"alerts stored more than once: {repeats[:5]}"
    missing, extra = want - set(got), set(got) - want
    assert not missing and not extra, f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} extra (e.g. {sorted(extra)[:3]})"
    # each alert's id is the one its rule version and snapshot derive
    ids = {(r, a, t): e for r, a, t, e in pg.execute(
        "SELECT rule_id, target_asin, triggered_at, event_id FROM alerts WHERE rule_id IS NOT NULL").fetchall()}
    assert all(ids[(r, a, t)] == event_id(r, 1, a, t) for r, a, t in want)
    counts = dict(pg.execute("SELECT id, trigger_count FROM alert_rules").fetchall())
    per_rule = Counter(r for r, _a, _t in want)
    assert {k: v for k, v in counts.items() if v} == dict(per_rule)
    print(f"\n{products * per_product} snapshots, {len(want)} alerts, {time.monotonic() - started:.1f}s")
