"""The local stack: real PostgreSQL and Kafka processes started by the project itself."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from insights.stack.kafka import LocalKafka
from insights.stack.pgbouncer import LocalPgBouncer
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
        self.pgbouncer = LocalPgBouncer(settings)

    def up(self, with_pgbouncer: bool = False) -> dict[str, str]:
        """Idempotent; returns what happened to each service."""
        result = {"postgres": self.postgres.up(), "kafka": self.kafka.up()}
        if with_pgbouncer:
            result["pgbouncer"] = self.pgbouncer.up()
        return result

    def down(self) -> dict[str, str]:
        # PgBouncer first (it fronts Postgres), then Kafka: consumers that outlive it
        # fail fast rather than hang on Postgres
        result = {"pgbouncer": self.pgbouncer.down()} if self.pgbouncer.running_pid() else {}
        return {**result, "kafka": self.kafka.down(), "postgres": self.postgres.down()}

    def status(self) -> list[ServiceStatus]:
        pg_pid = self.postgres.running_pid()
        kafka_pid = self.kafka.running_pid()
        rows = [
            ServiceStatus("postgres", pg_pid, bool(pg_pid) and self.postgres.answers(), self.postgres.dsn),
            ServiceStatus("kafka", kafka_pid, bool(kafka_pid) and self.kafka.answers(), self.kafka.bootstrap),
        ]
        # PgBouncer is optional (`stack up --with-pgbouncer`): listed while its process
        # runs, so a bouncer that runs but no longer routes a query fails the status,
        # while a stack started without it is not reported as broken
        bouncer_pid = self.pgbouncer.running_pid()
        if bouncer_pid:
            rows.append(
                ServiceStatus("pgbouncer", bouncer_pid, self.pgbouncer.answers(), self.pgbouncer.dsn("insights"))
            )
        return rows
