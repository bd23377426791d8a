"""Alert rules and the changes that fire them (pure)."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timezone
from decimal import Decimal

from insights.generate.alerts import alert_rules, alerts_for, changes
from insights.generate.market import Market

START = datetime(2025, 2, 1, tzinfo=timezone.utc)


def _pair():
    first = next(Market(1, START, seed=3).scrapes(1))
    return first, dataclasses.replace(first, sequence=2)


def test_rules_cycle_types_with_rising_thresholds():
    rules = alert_rules(8)
    assert [r.id for r in rules] == list(range(1, 9))
    assert [r.rule_type for r in rules[:4]] == ["price_change", "stock_change", "rating_change", "rank_change"]
    assert rules[4].rule_type == "price_change" and rules[4].threshold > rules[0].threshold


def test_unchanged_page_raises_nothing():
    prev, cur = _pair()
    assert changes(prev, cur) == []
    assert alerts_for(random.Random(0), prev, cur, alert_rules(12)) == []


def test_price_drop_fires_the_rules_it_reaches_and_no_default():
    prev, cur = _pair()
    prev = dataclasses.replace(prev, price=Decimal("100.00"))
    cur = dataclasses.replace(cur, price=Decimal("85.00"))  # -15 %
    alerts = alerts_for(random.Random(0), prev, cur, alert_rules(12))
    assert sorted(a.rule_id for a in alerts) == [1, 5]  # thresholds 10 and 15; 20 not reached
    assert all(a.change_percentage == Decimal("-15.00") and a.alert_type == "PRICE_CHANGE" for a in alerts)
    assert len({a.event_id for a in alerts}) == 2


def test_small_change_below_every_rule_is_a_ruleless_alert():
    prev, cur = _pair()
    prev = dataclasses.replace(prev, price=Decimal("100.00"))
    cur = dataclasses.replace(cur, price=Decimal("93.00"))  # -7 %: above the 5 % default only
    (alert,) = alerts_for(random.Random(0), prev, cur, alert_rules(12))
    assert alert.rule_id is None and alert.severity == "LOW"


def test_stock_out_fires_every_stock_rule():
    prev, cur = _pair()
    cur = dataclasses.replace(cur, availability="OUT_OF_STOCK", price=None, buybox_price=None)
    alerts = alerts_for(random.Random(0), prev, cur, alert_rules(8))
    assert sorted(a.rule_id for a in alerts) == [2, 6]
    assert alerts[0].new_value == "OUT_OF_STOCK"
