"""Alerts raised from the simulated market, as the alerting service would raise them.

Rules 1..K are generic watch rules (one rule type each, cycling price, stock, rating,
rank, with thresholds rising above the defaults). Each scrape is compared with the
product's previous one; every rule whose type matches and whose threshold the change
reaches fires one alert. A notable change no rule covers (above the default threshold,
below every rule's) is raised without a rule (``rule_id`` null), as a system default
would, so alerts with and without rules both occur.

Alerts name real ASINs of the same simulated catalogue: with the same ``seed`` and
product count, ``insights produce scrape`` creates exactly these products.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from insights.generate.market import OUT_OF_STOCK, Market, new_event_id
from insights.generate.records import Alert, AlertRuleDef, Scrape

RULE_TYPES = ("price_change", "stock_change", "rating_change", "rank_change")
#: alert_type symbol (Avro AlertType) per rule type
ALERT_TYPE = {
    "price_change": "PRICE_CHANGE",
    "stock_change": "STOCK_CHANGE",
    "rating_change": "RATING_CHANGE",
    "rank_change": "RANK_CHANGE",
}
#: what counts as notable without any rule: 5 % price, any stock change, 0.1 star, 30 % rank
DEFAULT_THRESHOLD = {
    "price_change": Decimal(5),
    "stock_change": Decimal(0),
    "rating_change": Decimal("0.1"),
    "rank_change": Decimal(30),
}
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def alert_rules(count: int) -> list[AlertRuleDef]:
    """Rules 1..count: rule types in turn, each round of four with a higher threshold."""
    rules = []
    for rule_id in range(1, count + 1):
        rule_type = RULE_TYPES[(rule_id - 1) % len(RULE_TYPES)]
        level = (rule_id - 1) // len(RULE_TYPES) + 1  # 1, 2, 3, ...
        base = DEFAULT_THRESHOLD[rule_type]
        step = {"price_change": 5, "stock_change": 0, "rating_change": Decimal("0.1"), "rank_change": 20}[rule_type]
        threshold = base + step * level
        rules.append(
            AlertRuleDef(
                id=rule_id,
                name=f"{rule_type.replace('_', ' ')} over {threshold}" + ("%" if rule_type in ("price_change", "rank_change") else ""),
                rule_type=rule_type,
                severity=SEVERITIES[min(level, len(SEVERITIES) - 1)],
                threshold=threshold,
            )
        )
    return rules


@dataclass(frozen=True)
class Change:
    """One notable difference between two consecutive scrapes of a product."""

    rule_type: str
    magnitude: Decimal  # what thresholds are compared with (>= 0)
    old: object
    new: object
    percent: Decimal | None
    what: str  # human text: "price dropped from 24.99 to 19.99"


def _percent(old: Decimal, new: Decimal) -> Decimal:
    return ((new - old) / old * 100).quantize(Decimal("0.01"))


def changes(prev: Scrape, cur: Scrape) -> list[Change]:
    """The notable changes from ``prev`` to ``cur`` (pure)."""
    found: list[Change] = []
    if prev.price is not None and cur.price is not None and prev.price != cur.price:
        pct = _percent(prev.price, cur.price)
        verb = "dropped" if pct < 0 else "rose"
        found.append(Change("price_change", abs(pct), str(prev.price), str(cur.price), pct, f"price {verb} from {prev.price} to {cur.price} {cur.currency}"))
    was_out = prev.availability in OUT_OF_STOCK
    is_out = cur.availability in OUT_OF_STOCK
    if was_out != is_out:
        what = "went out of stock" if is_out else "is back in stock"
        found.append(Change("stock_change", Decimal(1), prev.availability, cur.availability, None, what))
    if prev.rating != cur.rating:
        delta = cur.rating - prev.rating
        found.append(Change("rating_change", abs(delta), str(prev.rating), str(cur.rating), _percent(prev.rating, cur.rating), f"rating moved from {prev.rating} to {cur.rating}"))
    main = cur.category
    if prev.bsr.get(main) and cur.bsr.get(main) and prev.bsr[main] != cur.bsr[main]:
        old_rank, new_rank = Decimal(prev.bsr[main]), Decimal(cur.bsr[main])
        pct = _percent(old_rank, new_rank)
        verb = "improved" if pct < 0 else "fell"
        found.append(Change("rank_change", abs(pct), int(old_rank), int(new_rank), pct, f"best-seller rank in {main} {verb} from #{old_rank} to #{new_rank}"))
    return found


def _fires(change: Change, threshold: Decimal) -> bool:
    if change.rule_type == "stock_change":
        return True
    return change.magnitude >= threshold and change.magnitude > 0


def alerts_for(
    rng: random.Random, prev: Scrape, cur: Scrape, rules: list[AlertRuleDef], run_id: uuid.UUID | None = None
) -> list[Alert]:
    """Alerts raised by the change from ``prev`` to ``cur``; event ids come from ``rng`` and
    ``run_id`` (a fresh one when not given: ids are never shared between runs)."""
    run_id = run_id if run_id is not None else uuid.uuid4()
    raised: list[Alert] = []
    for change in changes(prev, cur):
        matching = [r for r in rules if r.rule_type == change.rule_type and _fires(change, r.threshold)]
        if not matching and _fires(change, DEFAULT_THRESHOLD[change.rule_type]):
            matching = [None]  # type: ignore[list-item]
        for rule in matching:
            severity = rule.severity if rule is not None else SEVERITIES[0]
            raised.append(
                Alert(
                    event_id=new_event_id(rng, run_id),
                    rule_id=rule.id if rule is not None else None,
                    alert_type=ALERT_TYPE[change.rule_type],
                    target_asin=cur.asin,
                    severity=severity,
                    title=f"{cur.brand} {cur.asin}: {change.what}"[:200],
                    message=f"{cur.title}: {change.what} (scraped {cur.scraped_at:%Y-%m-%d %H:%M} UTC).",
                    old_value=change.old,
                    new_value=change.new,
                    change_percentage=change.percent,
                    metadata={
                        "rule_name": rule.name if rule is not None else "default",
                        "scrape_event_id": str(cur.event_id),
                        "bsr": json.dumps(cur.bsr, sort_keys=True),
                    },
                    triggered_at=cur.scraped_at,
                )
            )
    return raised


def alert_feed(market: Market, rules: list[AlertRuleDef], limit: int | None = None) -> Iterator[Alert]:
    """Alerts from the market's scrapes, in time order, ``limit`` of them or forever."""
    last: dict[str, Scrape] = {}
    emitted = 0
    for cur in market.scrapes():
        prev = last.get(cur.asin)
        last[cur.asin] = cur
        if prev is None:
            continue
        for alert in alerts_for(market.rng, prev, cur, rules, market.run_id):
            if limit is not None and emitted >= limit:
                return
            emitted += 1
            yield alert
