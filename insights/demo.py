"""The README's main job, end to end on the local stack, printing what happened.

Each step is a function that does real work and returns a line for the report; the
CLI command (``insights demo``) runs them in order and stops at the first failure.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from insights.errors import InsightsError
from insights.settings import Settings
from insights.stack import LocalStack


class DemoError(InsightsError):
    """A demo step did not do what it promised."""


@dataclass
class DemoRun:
    settings: Settings
    report: Callable[[str], None]

    def step(self, title: str, action: Callable[[], str]) -> None:
        started = time.perf_counter()
        result = action()
        self.report(f"[{time.perf_counter() - started:6.2f}s] {title}: {result}")

    # --- steps -----------------------------------------------------------------------
    def stack_up(self) -> str:
        result = LocalStack(self.settings).up()
        return ", ".join(f"{k} {v}" for k, v in result.items())

    def kafka_round_trip(self) -> str:
        conf = self.settings.kafka_config()
        topic = self.settings.topic(f"demo.smoke.{uuid.uuid4().hex[:8]}")
        admin = AdminClient(conf)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
        try:
            token = uuid.uuid4().hex.encode()
            producer = Producer({**conf, "enable.idempotence": True})
            producer.produce(topic, key=b"demo", value=token)
            if producer.flush(30):
                raise DemoError(f"message to {topic} was not acknowledged")
            consumer = Consumer(
                {**conf, "group.id": f"demo-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
            )
            consumer.subscribe([topic])
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    msg = consumer.poll(0.5)
                    if msg is not None and msg.error() is None and msg.value() == token:
                        return f"produced and consumed 1 message on {topic} (offset {msg.offset()})"
            finally:
                consumer.close()
            raise DemoError(f"the message produced to {topic} did not come back")
        finally:
            admin.delete_topics([topic])

    def postgres_query(self) -> str:
        with psycopg.connect(self.settings.pg_conninfo(), connect_timeout=10) as conn:
            version, wal_level = conn.execute(
                "SELECT current_setting('server_version'), current_setting('wal_level')"
            ).fetchone()
        return f"PostgreSQL {version} answers, wal_level={wal_level}"


def run_demo(settings: Settings, report: Callable[[str], None]) -> None:
    demo = DemoRun(settings, report)
    demo.step("local stack", demo.stack_up)
    demo.step("kafka", demo.kafka_round_trip)
    demo.step("postgres", demo.postgres_query)
