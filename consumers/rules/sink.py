"""The alert-rule engine as a sink: CDC changes of snapshots, rules and groups -> AlertTriggered.

``prepare`` is pure (which snapshot changed, or that the cache is stale); ``write``
reloads the rule and membership cache when the batch changed them, reads each changed
snapshot with its neighbours by ``scraped_at``, decides the firings
(``consumers.rules.engine.plan_batch``; a snapshot read of a resync only for the rule
versions that could have seen it live), stores them in ``rules.firings`` and publishes one
AlertTriggered per new firing to the alerts topic, waiting for the broker's
acknowledgement before the loop commits the batch with its offsets. A crash between the
acknowledgement and the commit re-sends the same events (their ids are derived from rule,
version and snapshot), which the alerts consumer stores once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge

from consumers.freshness import Freshness
from consumers.rules import store
from consumers.rules.changes import RuleChange, parse_change
from consumers.rules.conditions import ALERT_TYPE, fired_json
from consumers.rules.engine import Decision, plan_batch
from core.events import AlertTriggered
from core.settings import Settings
from streams.producer import DeliveryError, EventProducer
from streams.serde import RecordContext, make_serializer
from streams.topics import event_topics

log = logging.getLogger("insights.rules")

#: AlertTriggered.change_percentage is DECIMAL(8,2)
_MAX_PCT = Decimal("999999.99")


class RulesMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.invalid = Gauge(
            "insights_rules_invalid", "active alert rules that do not validate and are skipped", registry=registry
        )
        self.skipped = Counter(
            "insights_rules_invalid_skipped",
            "evaluations of a snapshot that skipped an active rule because it does not validate",
            registry=registry,
        )
        self.fired = Counter("insights_rules_fired", "alerts published by the rule engine", ["rule_type"],
                             registry=registry)
        self.evaluated = Counter("insights_rules_snapshots_evaluated", "snapshots evaluated", registry=registry)
        self.before_rule = Counter(
            "insights_rules_snapshot_reads_before_rule",
            "matches of a rule on snapshot reads (cdc resync/snapshot) that did not fire: the rule version "
            "began after both snapshots were stored, so it never saw them live (a pair read in two batches "
            "counts twice)",
            registry=registry,
        )
        self.reloads = Counter(
            "insights_rules_cache_reloads",
            "reloads of the rule and membership cache (a rule or group changed; not the alerts' counter updates)",
            registry=registry,
        )


class RulesSink:
    name = "rules"
    subject = "cdc_change"

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.topic = next(s.name for s in event_topics(settings) if s.value_subject == "alert_triggered")
        self.serialize = make_serializer(settings, "alert_triggered")
        self.context = RecordContext(self.topic)
        self.producer = EventProducer(settings)
        registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RulesMetrics(registry)
        self.freshness = Freshness("rules", registry)
        self.cache: store.Cache | None = None
        self._reported: set[tuple[int, int]] = set()

    def prepare(self, record: dict[str, Any]) -> RuleChange:
        return parse_change(record)

    def timestamps(self, items: Sequence[RuleChange]) -> Mapping[str, Iterable[datetime]]:
        return {}  # rules.firings is not partitioned; the alerts consumer makes the alerts' partitions

    def _reload(self, conn: psycopg.Connection) -> store.Cache:
        cache = store.load_cache(conn)
        self.metrics.reloads.inc()
        self.metrics.invalid.set(len(cache.invalid))
        for (rule_id, version), why in sorted(cache.invalid.items()):
            if (rule_id, version) not in self._reported:
                log.warning("alert rule %d (version %d) does not validate and is skipped: %s", rule_id, version, why,
                            extra={"rule_id": rule_id, "rule_version": version, "error": why})
        self._reported = set(cache.invalid)
        return cache

    def write(self, conn: psycopg.Connection, items: Sequence[RuleChange]) -> Mapping[str, int]:
        # the cache is rebuilt inside the batch's transaction, so a rule change and a
        # snapshot of one batch are evaluated together with the rule as committed
        self.freshness.record(conn, (i.commit_time_us for i in items),
                              [i.scraped_at for i in items if i.scraped_at is not None])
        # every stored alert updates its rule's counters (a change of alert_rules each): a
        # reload of every rule for those cost the engine a third of its CPU at 2,000 events/s
        if self.cache is None or any(i.kind == "cache" and not self.cache.holds(i.rule) for i in items):
            self.cache = self._reload(conn)
        cache = self.cache
        keys = sorted({(i.asin, i.scraped_at) for i in items if i.kind == "snapshot" and cache.rules_for(i.asin)})
        if cache.invalid:
            self.metrics.skipped.inc(len(cache.invalid) * sum(1 for i in items if i.kind == "snapshot"))
        if not keys:
            return {"rules.firings": 0}
        # a snapshot read republishes a stored row (a resync): only rule versions that could
        # have seen it live evaluate it; a live change of the same row in the batch wins
        live = {(i.asin, i.scraped_at) for i in items if i.kind == "snapshot" and not i.read}
        reads = {k for k in keys if k not in live}
        around = store.neighbours(conn, keys)  # type: ignore[arg-type]
        self.metrics.evaluated.inc(len(around))
        planned = plan_batch(cache, around, store.firings(conn, {k[0] for k in keys}), reads)
        decisions = planned.decisions
        if planned.before_rule:
            self.metrics.before_rule.inc(planned.before_rule)
        new = store.insert_firings(conn, [d.firing for d in decisions])
        published = [d for d in decisions if d.firing.event_id in new]
        self._publish(published)
        return {"rules.firings": len(new), "alerts published": len(published)}

    def _publish(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        for d in decisions:
            event = alert_event(d)
            self.producer.produce_event(self.topic, d.cur.asin.encode(), self.serialize(event, self.context))
        try:
            self.producer.flush(30)
        except DeliveryError as exc:
            # a fresh producer for the retry (this one remembers the failure); the loop
            # retries the batch, and the same event ids make a second copy harmless
            self.producer = EventProducer(self.settings)
            raise ConnectionError(f"alerts topic {self.topic}: {exc}") from exc
        for d in decisions:
            self.metrics.fired.labels(d.rule.rule_type).inc()


def alert_event(d: Decision) -> AlertTriggered:
    pct = d.fired.change_percentage
    if pct is not None and abs(pct) > _MAX_PCT:
        pct = None
    return AlertTriggered(
        event_id=d.firing.event_id,
        triggered_at=d.cur.scraped_at,
        rule_id=d.rule.id,
        alert_type=ALERT_TYPE[d.rule.rule_type],
        target_asin=d.cur.asin,
        severity=d.rule.severity.upper(),
        title=d.fired.title,
        message=d.fired.message,
        old_value=fired_json(d.fired.old_value),
        new_value=fired_json(d.fired.new_value),
        change_percentage=pct,
        metadata={
            "rule_version": str(d.rule.version),
            "rule_name": d.rule.name,
            "previous_scraped_at": d.prev.scraped_at.isoformat(),
            "source": "rules-engine",
        },
    )
