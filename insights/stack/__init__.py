"""The local stack: real PostgreSQL and Kafka processes started by the project itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.errors import StackError
from core.settings import Settings
from insights.stack.kafka import LocalKafka
from insights.stack.pgbouncer import LocalPgBouncer, PgBouncerTarget
from insights.stack.postgres import LocalPostgres
from insights.stack.replicas import Cluster


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    answers: bool
    address: str
    #: what else is worth a glance (a Kafka node's role, the quorum's leader and lag)
    detail: str = ""


class LocalStack:
    def __init__(self, settings: Settings, brokers: int | None = None) -> None:
        self.settings = settings
        self.cluster = Cluster(settings)
        # the node the topology names primary: after `stack failover` no longer `.stack/pg`
        self.postgres: LocalPostgres = self.cluster.primary
        self.kafka = LocalKafka(settings, brokers)
        # in front of the node the topology names primary (another port after a failover)
        self.pgbouncer = LocalPgBouncer(settings, target=PgBouncerTarget("127.0.0.1", self.postgres.port))

    def up(
        self,
        with_pgbouncer: bool = False,
        replicas: int | None = None,
        progress: Callable[[str], None] = lambda _m: None,
    ) -> dict[str, str]:
        """Idempotent; returns what happened to each service.

        ``replicas``: clone streaming replicas until there are that many (known ones are
        always started). The primary's WAL archive is pointed at pgBackRest when the
        cluster archives (``insights/stack/pgbackrest.py``); a cluster initialised before that
        is left as it is (changing archive_mode needs a restart).
        """
        from insights.stack.pgbackrest import configure_local_archiving
        from insights.stack.packages import ensure_optional

        progress("checking the PostgreSQL operations packages (pgbackrest, pg_cron)")
        result = {f"package {name}": what for name, what in ensure_optional().items()}
        progress("starting PostgreSQL")
        result["postgres"] = self.postgres.up()
        progress("configuring the WAL archive (pgBackRest)")
        result["backups"] = configure_local_archiving(self.settings, self.postgres)
        result.update(self.cluster.up(replicas, progress))
        progress("starting Kafka")
        result["kafka"] = self.kafka.up()
        if not self.kafka.stale_nodes():  # a node that predates SASL_SSL has nowhere to log in
            scram = self.kafka.register_scram_user()
            if scram:
                result["kafka users"] = scram
        if with_pgbouncer:
            result["pgbouncer"] = self.pgbouncer.up()
        return result

    def down(self) -> dict[str, str]:
        # PgBouncer first (it fronts Postgres), then Kafka: consumers that outlive it
        # fail fast rather than hang on Postgres. Replicas before the primary: they would
        # only log the lost connection.
        result = {"pgbouncer": self.pgbouncer.down()} if self.pgbouncer.running_pid() else {}
        return {**result, "kafka": self.kafka.down(), **self.cluster.down(), "postgres": self.postgres.down()}

    def status(self) -> list[ServiceStatus]:
        pg_pid = self.postgres.running_pid()
        rows = [ServiceStatus("postgres", pg_pid, bool(pg_pid) and self.postgres.answers(), self.postgres.dsn)]
        for replica in self.cluster.replicas():
            pid = replica.running_pid()
            # a replica answers as one only while it is in recovery (a promoted one is not)
            answers = bool(pid) and replica.in_recovery() is True
            rows.append(ServiceStatus(f"postgres {replica.spec.name} (replica)", pid, answers, replica.dsn))
        rows.extend(self.kafka_status())
        # PgBouncer is optional (`stack up --with-pgbouncer`): listed while its process
        # runs, so a bouncer that runs but no longer routes a query fails the status,
        # while a stack started without it is not reported as broken
        bouncer_pid = self.pgbouncer.running_pid()
        if bouncer_pid:
            rows.append(
                ServiceStatus("pgbouncer", bouncer_pid, self.pgbouncer.answers(), self.pgbouncer.dsn("insights"))
            )
        return rows

    def kafka_status(self) -> list[ServiceStatus]:
        """One row per Kafka node; a cluster adds a row for its controller quorum."""
        kafka = self.kafka
        if kafka.count == 1:
            pid = kafka.running_pid()
            return [ServiceStatus("kafka", pid, bool(pid) and kafka.answers(), kafka.bootstrap)]
        rows: list[ServiceStatus] = []
        quorum = None
        problem = ""
        if any(n.running_pid() for n in kafka.nodes):
            try:
                quorum = kafka.quorum()
            except StackError as exc:
                problem = str(exc)
        roles = {m.node_id: m for m in quorum.members} if quorum else {}
        for node in kafka.nodes:
            pid = node.running_pid()
            member = roles.get(node.node_id)
            role = f"broker+controller, {member.status.lower()}, lag {member.lag}" if member else "broker+controller"
            rows.append(
                ServiceStatus(
                    f"kafka-{node.node_id}",
                    pid,
                    bool(pid) and kafka.node_answers(node),
                    node.address,
                    role,
                )
            )
        controllers = ",".join(n.controller_address for n in kafka.nodes)
        if quorum is None:
            rows.append(ServiceStatus("kafka quorum", None, False, controllers, problem or "no node runs"))
        else:
            # a quorum answers while it has a leader and a majority of its voters take part
            taking_part = {m.node_id for m in quorum.members if m.status in {"Leader", "Follower"}}
            healthy = quorum.leader_id in quorum.voters and len(taking_part) * 2 > len(quorum.voters)
            rows.append(ServiceStatus("kafka quorum", None, healthy, controllers, quorum.describe()))
        return rows
