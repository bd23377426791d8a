"""The local stack: real PostgreSQL and Kafka processes started by the project itself."""

from __future__ import annotations

from dataclasses import dataclass

from insights.settings import Settings
from insights.stack.kafka import LocalKafka
from insights.stack.postgres import LocalPostgres


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    answers: bool
    address: str


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres = LocalPostgres(settings)
        self.kafka = LocalKafka(settings)

    def up(self) -> dict[str, str]:
        """Idempotent; returns what happened to each service."""
        return {"postgres": self.postgres.up(), "kafka": self.kafka.up()}

    def down(self) -> dict[str, str]:
        # Kafka first: consumers that outlive it fail fast rather than hang on Postgres
        return {"kafka": self.kafka.down(), "postgres": self.postgres.down()}

    def status(self) -> list[ServiceStatus]:
        pg_pid = self.postgres.running_pid()
        kafka_pid = self.kafka.running_pid()
        return [
            ServiceStatus("postgres", pg_pid, bool(pg_pid) and self.postgres.answers(), self.postgres.dsn),
            ServiceStatus("kafka", kafka_pid, bool(kafka_pid) and self.kafka.answers(), self.kafka.bootstrap),
        ]
