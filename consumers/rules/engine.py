"""Which rules fire on a batch's snapshots (pure): pairs by scraped_at, dedup, late data, cooldown.

For each changed snapshot S that still exists, with predecessor P and successor N by
``scraped_at`` (read from the source when the batch is evaluated):

* (P, S) is evaluated: S is compared with its true predecessor, however late it came;
* (S, N) is evaluated too when S is late (N exists): N's predecessor is now S;
* a rule version fires at most once per snapshot (``rules.firings``, and the event id
  derived from rule id, version and snapshot key);
* S does not fire when N already fired for the same rule against P and no longer
  would against S: N's alert reported the change S is part of (no second alert for it);
* ``cooldown``: no firing within the period of another firing of the rule for the product.

Candidates are taken in ``scraped_at`` order, so cooldown inside one batch keeps the
earliest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from consumers.rules.conditions import Fired, Rule, Snap, evaluate, event_id
from consumers.rules.store import Cache, Firing, Neighbours


@dataclass(frozen=True)
class Decision:
    rule: Rule
    prev: Snap
    cur: Snap
    fired: Fired
    firing: Firing


def plan(cache: Cache, around: Iterable[Neighbours], known: Iterable[Firing]) -> list[Decision]:
    # every (predecessor, snapshot) pair to look at, with the snapshot's successor when known
    pairs: dict[tuple[str, datetime], tuple[Snap, Snap, Snap | None]] = {}
    for n in around:
        if n.prev is not None:
            pairs[(n.cur.asin, n.cur.scraped_at)] = (n.prev, n.cur, n.next)
        if n.next is not None:
            pairs.setdefault((n.next.asin, n.next.scraped_at), (n.cur, n.next, n.after_next))
    fired_at: dict[tuple[int, int, str, datetime], Firing] = {}
    times: dict[tuple[int, str], list[datetime]] = {}
    for f in known:
        fired_at[(f.rule_id, f.rule_version, f.asin, f.scraped_at)] = f
        times.setdefault((f.rule_id, f.asin), []).append(f.scraped_at)
    out: list[Decision] = []
    for key in sorted(pairs, key=lambda k: (k[1], k[0])):
        prev, cur, nxt = pairs[key]
        for rule in cache.rules_for(cur.asin):
            if (rule.id, rule.version, cur.asin, cur.scraped_at) in fired_at:
                continue
            fired = evaluate(rule, prev, cur)
            if fired is None:
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
    return out
