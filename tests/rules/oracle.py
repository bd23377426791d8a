"""An independent evaluation of alert rules over the final snapshots (the tests' oracle).

Written from docs/alert-rules.md, not from consumers/rules: plain Python over rows read
back from ``product_snapshots``, each product's snapshots in ``scraped_at`` order, each
compared with the one before it. Cooldown is left out (the oracle tests use no cooldown).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

Key = tuple[int, str, datetime]  # rule id, asin, scraped_at of the snapshot that fired


def _fires(rule_type: str, c: dict[str, Any], prev: tuple[Any, ...], cur: tuple[Any, ...]) -> bool:
    _at0, price0, rating0, bsr0, stock0 = prev
    _at1, price1, rating1, bsr1, stock1 = cur
    if "min_price" in c:
        price = price1 if price1 is not None else price0
        if price is None or price < Decimal(str(c["min_price"])):
            return False
    if rule_type == "price_change":
        if price0 is None or price1 is None:
            return False
        if "percent" in c:
            if price0 == 0:
                return False
            change = (price1 - price0) / price0 * 100
            want = Decimal(str(c["percent"]))
            return {"down": change <= -want, "up": change >= want, "any": abs(change) >= want}[c.get("direction", "any")]
        if "below" in c:
            return price0 >= Decimal(str(c["below"])) > price1
        raise AssertionError(c)
    if rule_type == "rating_change":
        if rating0 is None or rating1 is None:
            return False
        change, want = rating1 - rating0, Decimal(str(c["amount"]))
        return {"down": change <= -want, "up": change >= want, "any": abs(change) >= want}[c.get("direction", "any")]
    if rule_type == "rank_change":
        r0 = (bsr0 or {}).get(c["category"])
        r1 = (bsr1 or {}).get(c["category"])
        if not isinstance(r0, int) or not isinstance(r1, int):
            return False
        return r0 <= c["rank_worse_than"] < r1
    if rule_type == "stock_change":
        if stock0 is None or stock1 is None:
            return False
        out0, out1 = stock0 in ("out_of_stock", "unavailable"), stock1 in ("out_of_stock", "unavailable")
        return out0 != out1 and (c["to"] == "any" or (c["to"] == "out_of_stock") == out1)
    raise AssertionError(rule_type)


def expected_alerts(conn: psycopg.Connection) -> set[Key]:
    """Every (rule, product, snapshot) an evaluation of the active rules over the final data fires."""
    members: dict[str, set[str]] = defaultdict(set)
    for group, asin in conn.execute(
        "SELECT m.group_id::text, m.competitor_asin FROM competitive_group_members m "
        "JOIN competitive_groups g ON g.id = m.group_id WHERE m.is_active AND g.is_active"
    ).fetchall():
        members[group].add(asin)
    rules = conn.execute(
        "SELECT id, rule_type, target_type, target_id, conditions FROM alert_rules WHERE is_active"
    ).fetchall()
    snaps: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for asin, *row in conn.execute(
        "SELECT asin, scraped_at, price, rating, bsr_data, availability_status FROM product_snapshots "
        "ORDER BY asin, scraped_at"
    ).fetchall():
        if isinstance(row[3], str):
            row[3] = json.loads(row[3])
        snaps[asin].append(tuple(row))
    out: set[Key] = set()
    for rule_id, rule_type, target_type, target_id, conditions in rules:
        targets = [target_id] if target_type == "product" else sorted(members.get(target_id, ()))
        for asin in targets:
            series = snaps.get(asin, [])
            for prev, cur in zip(series, series[1:], strict=False):
                if _fires(rule_type, conditions, prev, cur):
                    out.add((rule_id, asin, cur[0]))
    return out


def stored_alerts(conn: psycopg.Connection) -> list[Key]:
    """The alerts the alerts consumer stored from the engine (with repeats, if there were any)."""
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT rule_id, target_asin, triggered_at FROM alerts WHERE rule_id IS NOT NULL ORDER BY 1, 2, 3"
    ).fetchall()]


class RoundModel:
    """The documented semantics applied round by round, for a stream the engine reads live.

    When snapshots arrive while the engine runs, what it fires depends on what existed
    when it evaluated: a snapshot that came late is compared with its true predecessor,
    its successor is compared with it again, and it does not report a change its
    successor's alert already reported (docs/alert-rules.md, "Late snapshots"). The tests
    let the engine catch up after each round of commits, so "what existed" is the table
    after that round, which this model reads back.
    """

    def __init__(self) -> None:
        #: (rule, asin, scraped_at) -> scraped_at of the snapshot it was compared with
        self.fired: dict[Key, datetime] = {}
        #: firings on a snapshot that did not change in its round (its predecessor came late)
        self.as_successor = 0
        #: late snapshots that did not fire because their successor's alert covered the change
        self.covered = 0

    def round(self, conn: psycopg.Connection, touched: set[tuple[str, datetime]]) -> None:
        members: dict[str, set[str]] = defaultdict(set)
        for group, asin in conn.execute(
            "SELECT m.group_id::text, m.competitor_asin FROM competitive_group_members m "
            "JOIN competitive_groups g ON g.id = m.group_id WHERE m.is_active AND g.is_active"
        ).fetchall():
            members[group].add(asin)
        rules_of: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
        for rule_id, rule_type, target_type, target_id, conditions in conn.execute(
            "SELECT id, rule_type, target_type, target_id, conditions FROM alert_rules WHERE is_active ORDER BY id"
        ).fetchall():
            for asin in ([target_id] if target_type == "product" else members.get(target_id, ())):
                rules_of[asin].append((rule_id, rule_type, conditions))
        series: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for asin, *row in conn.execute(
            "SELECT asin, scraped_at, price, rating, bsr_data, availability_status FROM product_snapshots "
            "WHERE asin = ANY(%s) ORDER BY asin, scraped_at", (sorted({a for a, _t in touched}),)
        ).fetchall():
            series[asin].append(tuple(row))
        pairs: dict[tuple[str, datetime], tuple[Any, Any, Any, bool]] = {}
        for asin, at in touched:
            rows = series.get(asin, [])
            where = {r[0]: i for i, r in enumerate(rows)}
            if at not in where:
                continue  # gone again
            i = where[at]
            prev = rows[i - 1] if i > 0 else None
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            after = rows[i + 2] if i + 2 < len(rows) else None
            if prev is not None:
                pairs[(asin, at)] = (prev, rows[i], nxt, False)
            if nxt is not None:
                pairs.setdefault((asin, nxt[0]), (rows[i], nxt, after, True))
        for asin, at in sorted(pairs, key=lambda k: (k[1], k[0])):
            prev, cur, nxt, successor = pairs[(asin, at)]
            for rule_id, rule_type, conditions in rules_of.get(asin, ()):
                key = (rule_id, asin, at)
                if key in self.fired or not _fires(rule_type, conditions, prev, cur):
                    continue
                if nxt is not None and self.fired.get((rule_id, asin, nxt[0])) == prev[0] \
                        and not _fires(rule_type, conditions, cur, nxt):
                    self.covered += 1
                    continue
                self.fired[key] = prev[0]
                self.as_successor += successor
