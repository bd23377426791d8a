"""The alerts sink's I/O: a batch of alerts inserted once each, rule counters kept exact."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from consumers.alerts import sql
from consumers.alerts.mapping import ALERT_COLUMNS, ALERT_TYPES, merge, prepare
from consumers.copy import copy_rows
from consumers.spec import SinkSpec, topic_for_subject
from streams.consumer.sink import Writes

_TRIGGERED_AT = ALERT_COLUMNS.index("triggered_at")


class AlertsSink:
    name = "alerts"
    subject = "alert_triggered"

    def prepare(self, record: dict[str, Any]) -> tuple[Any, ...]:
        return prepare(record)

    def timestamps(self, items: Sequence[tuple[Any, ...]]) -> Mapping[str, Iterable[datetime]]:
        return {"alerts": [row[_TRIGGERED_AT] for row in items]}

    def write(self, conn: psycopg.Connection, items: Sequence[tuple[Any, ...]]) -> Writes:
        rows = merge(items)
        with conn.cursor() as cur:
            cur.execute(sql.CREATE_STAGING)
            copy_rows(cur, sql.COPY_ALERTS, ALERT_TYPES, rows)
            cur.execute(sql.INSERT_AND_COUNT)
            found = cur.fetchone()
        inserted, rules = (int(found[0]), int(found[1])) if found else (0, 0)
        done = Writes()
        done.count("alerts", inserted, 0)
        done.count("alert_rules", 0, rules)  # counters bumped only for the alerts just inserted
        # an alert whose row was there already (redelivered, replayed) changed nothing
        done.already_stored = len(items) - inserted
        return done


SPEC = SinkSpec(
    name="alerts",
    help="AlertTriggered events into alerts, keeping alert_rules' counters exact",
    make=AlertsSink,
    topics=lambda settings: [topic_for_subject(settings, AlertsSink.subject)],
)
