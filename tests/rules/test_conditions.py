"""The condition language and the engine's decisions, without Kafka or PostgreSQL (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from consumers.rules.changes import parse_change
from consumers.rules.conditions import (
    Rule,
    RuleError,
    Snap,
    could_have_seen,
    evaluate,
    event_id,
    parse_conditions,
    validate_fields,
)
from consumers.rules.engine import plan, plan_batch
from consumers.rules.store import Cache, Firing, Neighbours

T0 = datetime(2025, 5, 1, tzinfo=UTC)
ASIN = "B000000001"


def rule(rule_type: str, conditions: dict[str, Any], rule_id: int = 1, version: int = 1) -> Rule:
    return Rule(rule_id, version, "r", rule_type, "product", ASIN, "high", parse_conditions(rule_type, conditions))


def snap(hours: float, price: str | None = "100.00", *, rating: str | None = "4.50", rank: int | None = 500,
         stock: str | None = "in_stock") -> Snap:
    return Snap(ASIN, T0 + timedelta(hours=hours), None if price is None else Decimal(price),
                None if rating is None else Decimal(rating), {} if rank is None else {"Electronics": rank}, stock)


@pytest.mark.parametrize(("rule_type", "conditions", "field"), [
    ("price_change", {"direction": "down"}, "conditions: exactly one of percent, amount, below, above"),
    ("price_change", {"percent": 10, "below": "5"}, "exactly one of"),
    ("price_change", {"percent": 0}, "conditions.percent"),
    ("price_change", {"percent": 10, "direction": "sideways"}, "conditions.direction"),
    ("price_change", {"percent": 10, "cooldown": "soon"}, "conditions.cooldown"),
    ("price_change", {"percent": 10, "min_price": -1}, "conditions.min_price"),
    ("price_change", {"percent": 10, "typo": 1}, "conditions.typo"),
    ("rating_change", {"amount": 6}, "conditions.amount"),
    ("rank_change", {"rank_worse_than": 10}, "conditions.category"),
    ("stock_change", {"to": "sold_out"}, "conditions.to"),
])
def test_an_invalid_condition_is_refused_naming_the_field(rule_type: str, conditions: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError, match=field.replace(".", r"\.")):
        parse_conditions(rule_type, conditions)


@pytest.mark.parametrize(("fields", "field"), [
    ({"rule_type": "colour_change"}, "rule_type"),
    ({"target_type": "product", "target_id": "nope"}, "target_id"),
    ({"target_type": "group", "target_id": "B000000001"}, "target_id"),
    ({"severity": "urgent"}, "severity"),
    ({"name": ""}, "name"),
])
def test_an_invalid_rule_is_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    base = {"name": "n", "rule_type": "price_change", "target_type": "product", "target_id": ASIN,
            "conditions": {"percent": 10}, "severity": "high"}
    with pytest.raises(RuleError, match=f"^{field}: "):
        validate_fields(base | fields)


def test_price_rules() -> None:
    drop = rule("price_change", {"direction": "down", "percent": 10})
    assert evaluate(drop, snap(0, "100.00"), snap(1, "90.00")) is not None  # exactly 10 %
    assert evaluate(drop, snap(0, "100.00"), snap(1, "90.01")) is None
    assert evaluate(drop, snap(0, "100.00"), snap(1, "120.00")) is None
    assert evaluate(drop, snap(0, None), snap(1, "10.00")) is None  # no price before: no change known
    fired = evaluate(drop, snap(0, "100.00"), snap(1, "80.00"))
    assert fired is not None and fired.change_percentage == Decimal("-20.00")
    below = rule("price_change", {"below": "19.99"})
    assert evaluate(below, snap(0, "21.00"), snap(1, "19.98")) is not None
    assert evaluate(below, snap(0, "19.50"), snap(1, "19.00")) is None  # already below: no crossing
    amount = rule("price_change", {"direction": "any", "amount": "5"})
    assert evaluate(amount, snap(0, "100.00"), snap(1, "105.00")) is not None
    floor = rule("price_change", {"direction": "up", "percent": 10, "min_price": "50"})
    assert evaluate(floor, snap(0, "40.00"), snap(1, "48.00")) is None
    assert evaluate(floor, snap(0, "50.00"), snap(1, "60.00")) is not None


def test_rating_rank_and_stock_rules() -> None:
    rating = rule("rating_change", {"direction": "down", "amount": "0.3"})
    assert evaluate(rating, snap(0, rating="4.50"), snap(1, rating="4.20")) is not None
    assert evaluate(rating, snap(0, rating="4.50"), snap(1, rating="4.30")) is None
    rank = rule("rank_change", {"category": "Electronics", "rank_worse_than": 1000})
    assert evaluate(rank, snap(0, rank=900), snap(1, rank=1200)) is not None
    assert evaluate(rank, snap(0, rank=1100), snap(1, rank=1200)) is None
    assert evaluate(rank, snap(0, rank=None), snap(1, rank=1200)) is None
    out = rule("stock_change", {"to": "out_of_stock"})
    assert evaluate(out, snap(0, stock="in_stock"), snap(1, "100.00", stock="out_of_stock")) is not None
    assert evaluate(out, snap(0, stock="out_of_stock"), snap(1, stock="in_stock")) is None
    back = rule("stock_change", {"to": "any"})
    assert evaluate(back, snap(0, stock="unavailable"), snap(1, stock="limited_stock")) is not None


def test_event_ids_depend_on_rule_version_and_snapshot_only() -> None:
    at = T0.astimezone(timezone_plus_two())
    assert event_id(1, 1, ASIN, T0) == event_id(1, 1, ASIN, at)  # the same instant
    assert len({event_id(1, 1, ASIN, T0), event_id(1, 2, ASIN, T0), event_id(2, 1, ASIN, T0),
                event_id(1, 1, ASIN, T0 + timedelta(seconds=1))}) == 4


def timezone_plus_two():  # noqa: ANN201 - a helper
    from datetime import timezone
    return timezone(timedelta(hours=2))


def cache(*rules: Rule) -> Cache:
    return Cache(by_asin={ASIN: list(rules)})


def firing(r: Rule, cur: Snap, prev: Snap) -> Firing:
    return Firing(r.id, r.version, ASIN, cur.scraped_at, prev.scraped_at, event_id(r.id, r.version, ASIN, cur.scraped_at))


def test_a_late_snapshot_is_compared_with_its_true_predecessor_and_its_successor_with_it() -> None:
    drop = rule("price_change", {"direction": "down", "percent": 10})
    p, s, n = snap(0, "100.00"), snap(1, "100.00"), snap(2, "85.00")
    # p 100, n 85 fired against p; s (100) arrives late between them: s is no change from p,
    # and n, now compared with s, already fired (once per snapshot): nothing new
    decided = plan(cache(drop), [Neighbours(s, p, n)], [firing(drop, n, p)])
    assert decided == []
    # a late snapshot that is the drop itself, while n had not fired: s fires, n is compared with s
    p, s, n = snap(0, "100.00"), snap(1, "80.00"), snap(2, "60.00")
    decided = plan(cache(drop), [Neighbours(s, p, n)], [])
    assert [(d.prev.scraped_at, d.cur.scraped_at) for d in decided] == [(p.scraped_at, s.scraped_at),
                                                                          (s.scraped_at, n.scraped_at)]


def test_a_late_snapshot_does_not_report_again_the_change_its_successor_reported() -> None:
    drop = rule("price_change", {"direction": "down", "percent": 10})
    p, s, n = snap(0, "100.00"), snap(1, "88.00"), snap(2, "85.00")
    # n fired against p (100 -> 85); s (late) is the same drop, and n against s (3 %) would not fire
    assert plan(cache(drop), [Neighbours(s, p, n)], [firing(drop, n, p)]) == []
    # but when n would still fire against s, s's own drop is a second change: both stand
    p, s, n = snap(0, "100.00"), snap(1, "89.00"), snap(2, "70.00")
    decided = plan(cache(drop), [Neighbours(s, p, n)], [firing(drop, n, p)])
    assert [d.cur.scraped_at for d in decided] == [s.scraped_at]


def test_a_snapshot_fires_once_per_rule_version_and_cooldown_spaces_firings() -> None:
    drop = rule("price_change", {"direction": "down", "percent": 10, "cooldown": "PT6H"})
    a, b, c, d = snap(0, "100.00"), snap(1, "80.00"), snap(3, "60.00"), snap(8, "40.00")
    decided = plan(cache(drop), [Neighbours(b, a, None), Neighbours(c, b, None), Neighbours(d, c, None)], [])
    assert [x.cur.scraped_at for x in decided] == [b.scraped_at, d.scraped_at]  # c within 6 h of b
    assert plan(cache(drop), [Neighbours(b, a, None)], [firing(drop, b, a)]) == []
    newer = rule("price_change", {"direction": "down", "percent": 10}, version=2)
    assert len(plan(cache(newer), [Neighbours(b, a, None)], [firing(drop, b, a)])) == 1


# --- snapshot reads (op 'r', a resync): only rule versions that could have seen the pair live

def stored(s: Snap, hours: float) -> Snap:
    """``s`` as stored ``hours`` after T0 (product_snapshots.created_at)."""
    return replace(s, created_at=T0 + timedelta(hours=hours))


def since(r: Rule, hours: float) -> Rule:
    return replace(r, version_at=T0 + timedelta(hours=hours))


def test_could_have_seen_a_pair_when_either_snapshot_was_stored_after_the_version_began() -> None:
    drop = since(rule("price_change", {"direction": "down", "percent": 10}), 10)
    p, s = snap(0, "100.00"), snap(1, "80.00")
    assert not could_have_seen(drop, stored(p, 2), stored(s, 9))  # both before the rule: history
    assert could_have_seen(drop, stored(p, 2), stored(s, 10))  # stored as the rule began
    assert could_have_seen(drop, stored(p, 2), stored(s, 30))  # stored after (scraped_at is older)
    assert could_have_seen(drop, stored(p, 30), stored(s, 2))  # a late predecessor re-compared s live
    # unknown times: evaluated (an alert kept rather than lost)
    assert could_have_seen(rule("price_change", {"direction": "down", "percent": 10}), stored(p, 2), stored(s, 3))
    assert could_have_seen(drop, p, stored(s, 3))


def test_a_snapshot_read_fires_only_for_rule_versions_that_could_have_seen_the_pair() -> None:
    drop = since(rule("price_change", {"direction": "down", "percent": 10}), 10)
    p, s = stored(snap(0, "100.00"), 1), stored(snap(1, "80.00"), 2)
    read = {(ASIN, s.scraped_at)}
    # the history stored before the rule, republished by a snapshot: no alert, counted
    planned = plan_batch(cache(drop), [Neighbours(s, p, None)], [], read)
    assert planned.decisions == [] and planned.before_rule == 1
    # the same pair changed live: today's semantics (fires), nothing counted
    planned = plan_batch(cache(drop), [Neighbours(s, p, None)], [])
    assert len(planned.decisions) == 1 and planned.before_rule == 0
    # a snapshot stored after the rule but never streamed (a failover): the read fires it
    late = stored(snap(1, "80.00"), 11)
    planned = plan_batch(cache(drop), [Neighbours(late, p, None)], [], {(ASIN, late.scraped_at)})
    assert [d.cur.scraped_at for d in planned.decisions] == [late.scraped_at] and planned.before_rule == 0
    # a rule version that began after the pair (its meaning changed) does not fire on it either
    v2 = since(rule("price_change", {"direction": "down", "percent": 5}, version=2), 10)
    assert plan_batch(cache(v2), [Neighbours(s, p, None)], [], read).before_rule == 1
    # no match, nothing counted
    flat = stored(snap(1, "100.00"), 2)
    assert plan_batch(cache(drop), [Neighbours(flat, p, None)], [], {(ASIN, flat.scraped_at)}).before_rule == 0


def test_the_successor_pair_of_a_read_is_live_when_the_successor_changed_live_in_the_batch() -> None:
    drop = since(rule("price_change", {"direction": "down", "percent": 10}), 10)
    p, s, n = stored(snap(0, "100.00"), 1), stored(snap(1, "100.00"), 2), stored(snap(2, "80.00"), 3)
    # s read, n read: (s, n) is history
    reads = {(ASIN, s.scraped_at), (ASIN, n.scraped_at)}
    around = [Neighbours(s, p, n), Neighbours(n, s, None)]
    assert plan_batch(cache(drop), around, [], reads).decisions == []
    # s read, n updated live in the same batch: (s, n) is evaluated as today
    decided = plan_batch(cache(drop), around, [], {(ASIN, s.scraped_at)}).decisions
    assert [d.cur.scraped_at for d in decided] == [n.scraped_at]
    # only the read of s brought (s, n): history as well
    assert plan_batch(cache(drop), [Neighbours(s, p, n)], [], {(ASIN, s.scraped_at)}).decisions == []


def test_parse_change_marks_snapshot_reads() -> None:
    def env(op: str) -> dict[str, Any]:
        return {"op": op, "source": {"table": "product_snapshots"},
                "after": {"asin": ASIN, "scraped_at": T0.isoformat()}}
    assert parse_change(env("r")).read and parse_change(env("r")).kind == "snapshot"
    assert not parse_change(env("c")).read and not parse_change(env("u")).read
