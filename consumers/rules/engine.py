"""Which rules fire on a batch's snapshots (pure): pairs by scraped_at, dedup, late data, cooldown.

For each changed snapshot S that still exists, with predecessor P and successor N by
``scraped_at`` (read from the source when the batch is evaluated):

* (P, S) is evaluated: S is compared with its true predecessor, however late it came;
* (S, N) is evaluated too when S is late (N exists): N's predecessor is now S;
* a rule version fires at most once per snapshot (``rules.firings``, and the event id
  derived from rule id, version and snapshot key);
* S does not fire when N already fired for the same rule against P and no longer
  would against S: N's alert reported the change S is part of (no second alert for it);
* ``cooldown``: no firing within the period of another firing of the rule for the product;
* a pair that only snapshot reads (op 'r': ``cdc resync``, ``cdc snapshot``) brought is
  evaluated only by the rule versions that could have seen it live
  (``conditions.could_have_seen``): a resync fires what the stream missed, not the whole
  history for a rule created since. A live change (c/u) of either snapshot in the same
  batch makes the pair live.

Candidates are taken in ``scraped_at`` order, so cooldown inside one batch keeps the
earliest.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from consumers.rules.conditions import Fired, Rule, Snap, could_have_seen, evaluate, event_id
from consumers.rules.store import Cache, Firing, Neighbours


@dataclass(frozen=True)
class Decision:
    rule: Rule
    prev: Snap
    cur: Snap
    fired: Fired
    firing: Firing


@dataclass
class Plan:
    decisions: list[Decision]
    #: (pair, rule version) matches not fired: only snapshot reads brought the pair, and the
    #: version began after both snapshots were stored (insights_rules_snapshot_reads_before_rule)
    before_rule: int = 0


def plan(cache: Cache, around: Iterable[Neighbours], known: Iterable[Firing],
         reads: Collection[tuple[str, datetime]] = ()) -> list[Decision]:
    return plan_batch(cache, around, known, reads).decisions


def plan_batch(cache: Cache, around: Iterable[Neighbours], known: Iterable[Firing],
               reads: Collection[tuple[str, datetime]] = ()) -> Plan:
    """``reads``: the (asin, scraped_at) of ``around`` whose only changes in the batch were
    snapshot reads; every other snapshot of ``around`` changed live."""
    # every (predecessor, snapshot) pair to look at, with the snapshot's successor when known
    pairs: dict[tuple[str, datetime], tuple[Snap, Snap, Snap | None]] = {}
    live: set[tuple[str, datetime]] = set()
    for n in around:
        changed_live = (n.cur.asin, n.cur.scraped_at) not in reads
        if n.prev is not None:
            key = (n.cur.asin, n.cur.scraped_at)
            pairs[key] = (n.prev, n.cur, n.next)
            if changed_live:
                live.add(key)
        if n.next is not None:
            key = (n.next.asin, n.next.scraped_at)
            pairs.setdefault(key, (n.cur, n.next, n.after_next))
            if changed_live:
                live.add(key)
    fired_at: dict[tuple[int, int, str, datetime], Firing] = {}
    times: dict[tuple[int, str], list[datetime]] = {}
    for f in known:
        fired_at[(f.rule_id, f.rule_version, f.asin, f.scraped_at)] = f
        times.setdefault((f.rule_id, f.asin), []).append(f.scraped_at)
    out: list[Decision] = []
    before_rule = 0
    for key in sorted(pairs, key=lambda k: (k[1], k[0])):
        prev, cur, nxt = pairs[key]
        for rule in cache.rules_for(cur.asin):
            if (rule.id, rule.version, cur.asin, cur.scraped_at) in fired_at:
                continue
            fired = evaluate(rule, prev, cur)
            if fired is None:
                continue
            if key not in live and not could_have_seen(rule, prev, cur):
                before_rule += 1
                continue
            if nxt is not None:
                later = fired_at.get((rule.id, rule.version, cur.asin, nxt.scraped_at))
                if later is not None and later.previous_at == prev.scraped_at and evaluate(rule, cur, nxt) is None:
                    continue
            cooldown = rule.conditions.cooldown
            if cooldown is not None and any(
                abs(t - cur.scraped_at) < cooldown for t in times.get((rule.id, cur.asin), ())
            ):
                continue
            firing = Firing(rule.id, rule.version, cur.asin, cur.scraped_at, prev.scraped_at,
                            event_id(rule.id, rule.version, cur.asin, cur.scraped_at))
            fired_at[(rule.id, rule.version, cur.asin, cur.scraped_at)] = firing
            times.setdefault((rule.id, cur.asin), []).append(cur.scraped_at)
            out.append(Decision(rule, prev, cur, fired, firing))
    return Plan(out, before_rule)
