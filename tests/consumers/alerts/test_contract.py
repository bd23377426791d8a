"""The sink contract (tests/consumers/sink_contract.py) for the alerts sink."""

from __future__ import annotations

import psycopg
import pytest

from consumers.spec import topic_for_subject
from core.settings import Settings
from streams.serde import RecordContext, make_serializer
from tests.consumers.events import alert, asin
from tests.consumers.sink_contract import Poison, Record, SinkContract

pytestmark = pytest.mark.integration

PRODUCTS, ALERTS = 6, 5


class TestAlertsContract(SinkContract):
    sink = "alerts"
    tables = ("alerts", "alert_rules")
    volatile = {
        "alerts": frozenset({"id"}),
        # version_at: when the rule's version began (ddl/0026), the seeding's clock
        "alert_rules": frozenset({"created_at", "updated_at", "version_at"}),
    }

    def seed(self, conn: psycopg.Connection) -> None:
        for rule in (1, 2):
            conn.execute(
                "INSERT INTO alert_rules (id, name, rule_type, target_type, target_id, conditions) "
                "VALUES (%s, %s, 'price_change', 'product', 'any', '{}')",
                (rule, f"rule {rule}"),
            )
        for n in range(PRODUCTS):  # what the alerts' target_asin refers to
            conn.execute("INSERT INTO products (asin, title) VALUES (%s, %s)", (asin(n), f"Product {n}"))

    def _topic(self, settings: Settings) -> tuple[str, object]:
        return topic_for_subject(settings, "alert_triggered"), make_serializer(settings, "alert_triggered")

    def records(self, settings: Settings) -> list[Record]:
        topic, serialize = self._topic(settings)
        events = [alert(1 + n % 2, n, seq, target=asin(n)) for seq in range(ALERTS) for n in range(PRODUCTS)]
        events.append(alert(None, 9, 1))  # a group alert: no rule, no product; stored, counts nothing
        return [
            Record(topic, (e.target_asin or "group").encode(), serialize(e, RecordContext(topic)))  # type: ignore[operator]
            for e in events
        ]

    def poison(self, settings: Settings) -> list[Poison]:
        topic, serialize = self._topic(settings)
        unknown_rule = alert(999, 2, 50, target=asin(2))  # decodes and validates; PostgreSQL refuses it
        return [
            Poison(Record(topic, asin(2).encode(), serialize(unknown_rule, RecordContext(topic))),  # type: ignore[operator]
                   "constraint", "fk_alerts_rule"),
            Poison(Record(topic, asin(3).encode(), b"not an alert"), "corrupt_payload", "magic"),
        ]
