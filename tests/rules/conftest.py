"""Rule-engine fixtures: the CDC reader over the migrated tables, the engine and the alerts consumer.

The reader streams the test database's tables under a uuid slot, publication and topic
prefix; ``consume_rules`` runs the engine until its stored offsets reach the end of its
four CDC topics, ``store_alerts`` the alerts consumer until it is idle.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb

from consumers.registry import build_loop
from consumers.rules.conditions import validate_fields
from core.settings import Settings
from streams.admin import ensure_topics
from streams.consumer import ConsumerLoop
from streams.topics import event_topics, rules_source_topics
from tests.cdc.conftest import drop_slot_when_free
from tests.loop_thread import LoopThread
from tests.summaries.conftest import _delete_topics, end_offsets

TABLES = ["products", "product_snapshots", "alerts", "alert_rules", "competitive_groups", "competitive_group_members"]


@pytest.fixture
def rules_settings(settings: Settings, pg_dsn: str) -> Iterator[Settings]:
    """Settings with a uuid slot and publication over the tables the engine reads; event topics made."""
    tag = uuid.uuid4().hex[:12]
    cdc = settings.replace(
        cdc_slot_name=f"rules_test_{tag}",
        cdc_publication=f"rules_test_{tag}",
        cdc_schema="public",
        cdc_tables=TABLES,
        cdc_heartbeat_interval_s=0.5,
        cdc_status_interval_s=0.2,
        cdc_standby_retry_s=0.5,
        batch_wait_ms=100,
    )
    ensure_topics(cdc, event_topics(cdc))
    yield cdc
    _delete_topics(cdc)
    drop_slot_when_free(pg_dsn, cdc)


def stored_offsets(conn: psycopg.Connection, group: str) -> dict[tuple[str, int], int]:
    return {
        (t, p): o
        for t, p, o in conn.execute(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", (group,)
        ).fetchall()
    }


def caught_up(settings: Settings, conn: psycopg.Connection, group: str,
              topics: Callable[[Settings], list[str]] = rules_source_topics) -> bool:
    targets = {k: v for k, v in end_offsets(settings, topics(settings)).items() if v > 0}
    stored = stored_offsets(conn, group)
    return all(stored.get(k, 0) >= v for k, v in targets.items())


def _run_until(loop: ConsumerLoop, done: Any, timeout: float, what: str) -> ConsumerLoop:
    running = LoopThread(loop)
    deadline = time.monotonic() + timeout
    try:
        while not done() and running.running():
            assert time.monotonic() < deadline, f"{what} not done after {timeout}s"
            time.sleep(0.1)
    finally:
        running.stop(60)
    running.raise_failure()
    return loop


def consume_rules(settings: Settings, group: str | None = None, timeout: float = 120.0,
                  registry: CollectorRegistry | None = None) -> ConsumerLoop:
    """Run the rule engine until its stored offsets reach the current ends of its topics."""
    group = group or settings.consumer.group
    loop = build_loop(settings, "rules", group=group, registry=registry)
    with psycopg.connect(settings.pg.conninfo(), autocommit=True) as conn:
        return _run_until(loop, lambda: caught_up(settings, conn, group), timeout, "rule engine")


def consume_sink(settings: Settings, sink: str, topics: Callable[[Settings], list[str]], group: str | None = None,
                 timeout: float = 120.0) -> ConsumerLoop:
    """Run sink ``sink`` until its stored offsets reach the current ends of ``topics``."""
    group = group or f"{settings.consumer.group}-{sink}"
    loop = build_loop(settings, sink, group=group)
    with psycopg.connect(settings.pg.conninfo(), autocommit=True) as conn:
        return _run_until(loop, lambda: caught_up(settings, conn, group, topics), timeout, sink)


def store_alerts(settings: Settings, timeout: float = 120.0) -> ConsumerLoop:
    """The alerts consumer (its own group) until it saw nothing new for 3 s."""
    loop = build_loop(settings, "alerts", group=f"{settings.consumer.group}-alerts", idle_exit_after=3.0)
    return _run_until(loop, lambda: False, timeout, "alerts consumer")


def add_rule(pg: psycopg.Connection, name: str, rule_type: str, target: str, conditions: dict[str, Any],
             *, group: bool = False, severity: str = "high") -> int:
    fields = validate_fields({"name": name, "rule_type": rule_type, "target_type": "group" if group else "product",
                              "target_id": target, "conditions": conditions, "severity": severity})
    row = pg.execute(
        "INSERT INTO alert_rules (name, rule_type, target_type, target_id, conditions, severity) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (fields.name, fields.rule_type, fields.target_type, fields.target_id, Jsonb(fields.conditions), severity),
    ).fetchone()
    assert row is not None
    return int(row[0])
