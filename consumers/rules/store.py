"""The rule engine's I/O inside the batch transaction: rules and groups, snapshots, firings.

Snapshots are read from ``product_snapshots`` itself, not from a copy: the engine runs
beside the source (the rules, the alerts and the counters live there too), and the
table is the one place that knows a snapshot's *true* predecessor by ``scraped_at``,
including one committed after the change being evaluated. Nothing here commits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from consumers.rules.changes import RuleState
from consumers.rules.conditions import Rule, RuleError, Snap, rule_from_row

log = logging.getLogger("insights.rules")


@dataclass
class Cache:
    """Active rules that validated, by target; active group membership; rules that did not."""

    by_asin: dict[str, list[Rule]] = field(default_factory=dict)
    by_group: dict[str, list[Rule]] = field(default_factory=dict)
    groups_of: dict[str, set[str]] = field(default_factory=dict)
    #: (rule id, version) -> why it does not validate
    invalid: dict[tuple[int, int], str] = field(default_factory=dict)
    #: every active rule row loaded, valid or not: id -> (version, name, version_at)
    loaded: dict[int, tuple[int, str | None, datetime | None]] = field(default_factory=dict)

    def holds(self, state: RuleState | None) -> bool:
        """True when the cache already is what this ``alert_rules`` row says: the alerts
        consumer's ``trigger_count``/``last_triggered_at`` updates, one per stored alert.
        ``None`` (a change that cannot say, e.g. of a group) is never held."""
        if state is None:
            return False
        rule_id, version, active, name, version_at = state
        if not active:
            return rule_id not in self.loaded
        return self.loaded.get(rule_id) == (version, name, version_at)

    def rules_for(self, asin: str) -> list[Rule]:
        found = list(self.by_asin.get(asin, ()))
        for group in sorted(self.groups_of.get(asin, ())):
            found.extend(self.by_group.get(group, ()))
        return found


def active_rule_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, version, version_at, name, rule_type, target_type, target_id, conditions, severity "
            "FROM alert_rules WHERE is_active IS TRUE ORDER BY id"
        ).fetchall()


def invalid_rules(conn: psycopg.Connection) -> dict[tuple[int, int], str]:
    """Active rules whose row does not validate (inserted by SQL, or by an older release)."""
    out: dict[tuple[int, int], str] = {}
    for row in active_rule_rows(conn):
        try:
            rule_from_row(row)
        except RuleError as exc:
            out[(int(row["id"]), int(row["version"]))] = str(exc)
    return out


def load_cache(conn: psycopg.Connection) -> Cache:
    cache = Cache()
    for row in active_rule_rows(conn):
        cache.loaded[int(row["id"])] = (int(row["version"]), row["name"], row["version_at"])
        try:
            rule = rule_from_row(row)
        except RuleError as exc:
            cache.invalid[(int(row["id"]), int(row["version"]))] = str(exc)
            continue
        target = cache.by_asin if rule.target_type == "product" else cache.by_group
        target.setdefault(rule.target_id, []).append(rule)
    for asin, group in conn.execute(
        "SELECT m.competitor_asin, m.group_id::text FROM competitive_group_members m "
        "JOIN competitive_groups g ON g.id = m.group_id "
        "WHERE m.is_active IS TRUE AND g.is_active IS TRUE"
    ).fetchall():
        cache.groups_of.setdefault(asin, set()).add(group)
    return cache


_COLS = "price, rating, bsr_data, availability_status, created_at"
NEIGHBOURS = f"""
SELECT k.asin, k.at,
       cur.present, cur.price, cur.rating, cur.bsr_data, cur.availability_status, cur.created_at,
       prev.scraped_at, prev.price, prev.rating, prev.bsr_data, prev.availability_status, prev.created_at,
       nxt.scraped_at, nxt.price, nxt.rating, nxt.bsr_data, nxt.availability_status, nxt.created_at,
       nn.scraped_at, nn.price, nn.rating, nn.bsr_data, nn.availability_status, nn.created_at
FROM unnest(%(asins)s::text[], %(ats)s::timestamptz[]) AS k(asin, at)
LEFT JOIN LATERAL (
    SELECT true AS present, {_COLS} FROM product_snapshots s WHERE s.asin = k.asin AND s.scraped_at = k.at
) cur ON true
LEFT JOIN LATERAL (
    SELECT scraped_at, {_COLS} FROM product_snapshots s WHERE s.asin = k.asin AND s.scraped_at < k.at
    ORDER BY s.scraped_at DESC LIMIT 1
) prev ON true
LEFT JOIN LATERAL (
    SELECT scraped_at, {_COLS} FROM product_snapshots s WHERE s.asin = k.asin AND s.scraped_at > k.at
    ORDER BY s.scraped_at LIMIT 1
) nxt ON true
LEFT JOIN LATERAL (
    SELECT scraped_at, {_COLS} FROM product_snapshots s WHERE s.asin = k.asin AND s.scraped_at > nxt.scraped_at
    ORDER BY s.scraped_at LIMIT 1
) nn ON true
"""


def _snap(asin: str, at: datetime | None, price: Any, rating: Any, bsr: Any, status: Any,
          created_at: datetime | None) -> Snap | None:
    if at is None:
        return None
    if isinstance(bsr, str):
        bsr = json.loads(bsr)
    return Snap(asin, at, price, rating, bsr if isinstance(bsr, dict) else {}, status, created_at)


@dataclass(frozen=True)
class Neighbours:
    cur: Snap
    prev: Snap | None
    next: Snap | None
    #: the successor of ``next`` (what ``next`` is compared with when ``cur`` came late)
    after_next: Snap | None = None


def neighbours(conn: psycopg.Connection, keys: Sequence[tuple[str, datetime]]) -> list[Neighbours]:
    """Each snapshot that still exists, with its predecessor, successor and the successor's
    successor by scraped_at."""
    if not keys:
        return []
    rows = conn.execute(NEIGHBOURS, {"asins": [k[0] for k in keys], "ats": [k[1] for k in keys]}).fetchall()
    out = []
    for r in rows:
        asin, at, present = r[0], r[1], r[2]
        if not present:
            continue  # deleted (or moved) since: its final form has its own change
        cur = _snap(asin, at, *r[3:8])
        assert cur is not None
        out.append(Neighbours(cur, _snap(asin, *r[8:14]), _snap(asin, *r[14:20]), _snap(asin, *r[20:26])))
    return out


@dataclass(frozen=True)
class Firing:
    rule_id: int
    rule_version: int
    asin: str
    scraped_at: datetime
    previous_at: datetime
    event_id: UUID


def firings(conn: psycopg.Connection, asins: Iterable[str]) -> list[Firing]:
    wanted = sorted(set(asins))
    if not wanted:
        return []
    rows = conn.execute(
        "SELECT rule_id, rule_version, asin, scraped_at, previous_at, event_id FROM rules.firings "
        "WHERE asin = ANY(%(asins)s)", {"asins": wanted},
    ).fetchall()
    return [Firing(*r) for r in rows]


INSERT_FIRINGS = """
INSERT INTO rules.firings (rule_id, rule_version, asin, scraped_at, previous_at, event_id)
SELECT * FROM unnest(%(rule)s::int[], %(version)s::int[], %(asin)s::text[], %(at)s::timestamptz[],
                     %(prev)s::timestamptz[], %(event)s::uuid[])
ON CONFLICT DO NOTHING
RETURNING event_id
"""


def insert_firings(conn: psycopg.Connection, new: Sequence[Firing]) -> set[UUID]:
    """Store ``new``; the event ids actually inserted (a concurrent or earlier copy is not)."""
    if not new:
        return set()
    rows = conn.execute(INSERT_FIRINGS, {
        "rule": [f.rule_id for f in new], "version": [f.rule_version for f in new],
        "asin": [f.asin for f in new], "at": [f.scraped_at for f in new],
        "prev": [f.previous_at for f in new], "event": [f.event_id for f in new],
    }).fetchall()
    return {r[0] for r in rows}
