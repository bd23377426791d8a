"""Issue 10, item 2: a permanent fault stops the consumer with one line; an outage at start is waited out.

Permanent (no retry can fix it, no record is at fault): a wrong password, a role without
privileges, a missing database. The consumer exits 1 with the operator's one line instead
of "retrying the batch" forever. The wrong password needs a server that asks for one,
whatever the shared stack is: these tests start a private cluster of their own made as a
TLS stack makes it (TLS 1.3, ``scram-sha-256`` on TCP; the real server, the real refusal).

Transient at start: Kafka or PostgreSQL away when the consumer starts. It waits, logs
``<dependency> unreachable`` once and ``<dependency> reachable again`` once, and then
stores the events. PostgreSQL: the private cluster itself, stopped before the consumer
starts and started after it. Kafka (and PostgreSQL once more, through the shared server):
the dependency "comes up" through a :class:`TcpProxy`, started cut (its port refuses
connections, as a host whose server has not started yet) and restored later: the client
sees what it would see from a server started after it, without a second JVM broker on a
two-core machine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings
from insights.stack.postgres import LocalPostgres
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.consumers.conftest import Topics, count, produce
from tests.consumers.events import scrape
from tests.private_pg import free_port, private_postgres
from tests.consumers.procs import consumer_env
from tests.service_procs import ServiceProcess, TcpProxy, default_service_env

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-tests"


@dataclass
class ScramCluster:
    server: LocalPostgres
    database: str
    #: a login role that may connect but holds no privilege on the project's tables
    stranger: str

    def dsn(self, user: str = "insights", dbname: str | None = None) -> str:
        # verify-full, the private CA and passfile; INSIGHTS_PG_PASSWORD, when set, wins over the passfile
        return self.server.dsn_for(dbname or self.database, user=user)


@pytest.fixture(scope="module")
def scram_cluster() -> Iterator[ScramCluster]:
    """A private PostgreSQL 15 that asks for a password (TLS + scram-sha-256) on TCP, with a migrated database."""
    from insights.db.migrations import migrate
    from insights.stack import tls

    with private_postgres("insights-scram-", stack_pg_tls=True) as server:
        # the superuser's password is PASSWORD: the passfile rotated, then a restart
        # re-asserts it (docs/security.md, "Password rotation")
        tls.write_passfile(server.passfile, {"insights": PASSWORD})
        server.down()
        server.up()
        database, stranger = "scram_db", "stranger"
        with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(stranger), sql.Literal(PASSWORD)))
        cluster = ScramCluster(server, database, stranger)
        migrate(cluster.dsn())
        # TCP asks for the password, and PASSWORD is it
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(cluster.dsn(), password="wrong", connect_timeout=5).close()
        psycopg.connect(cluster.dsn(), password=PASSWORD, connect_timeout=5).close()
        yield cluster


def _consume_once(settings: Settings, dsn: str, password: str | None, *args: str, timeout: float = 90):
    # the operator's view: no log lines, only what the CLI prints when it ends
    env = {**consumer_env(settings, dsn), "INSIGHTS_LOG_LEVEL": "ERROR", "INSIGHTS_LOG_JSON": "false"}
    if password is not None:
        env["INSIGHTS_PG_PASSWORD"] = password
    started = time.monotonic()
    done = run_cli("consume", "scrape", "--exit-when-idle", "60", *args, env=env, timeout=timeout)
    return done, time.monotonic() - started


def test_wrong_password_stops_the_consumer_with_one_line(
    settings: Settings, topics: Topics, scram_cluster: ScramCluster
) -> None:
    produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(3)])
    done, took = _consume_once(settings, scram_cluster.dsn(), "wrong")
    line = assert_one_line_error(
        done, 1, f"PostgreSQL at 127.0.0.1:{scram_cluster.server.port} rejected the password of role 'insights'",
        "INSIGHTS_PG_PASSWORD",
    )
    assert "wrong" not in line  # the secret is never printed
    assert took < 45, f"a wrong password took {took:.0f}s to stop the consumer: it was retried"


def test_wrong_password_found_while_waiting_for_kafka_stops_the_consumer(
    settings: Settings, scram_cluster: ScramCluster
) -> None:
    # Kafka away, so the loop never reaches PostgreSQL itself: the service's probe finds
    # the refusal, /healthz fails at once, and the consumer stops with the one line
    nobody = settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    done, took = _consume_once(nobody, scram_cluster.dsn(), "wrong", "--metrics-port", str(free_port()))
    # after librdkafka's own line(s) about the broker, at ERROR level: the last line is ours
    assert_one_line_error(done, 1, "rejected the password of role 'insights'", "INSIGHTS_PG_PASSWORD",
                          after_progress=True)
    assert took < 45, took


def test_role_without_privileges_stops_the_consumer_naming_the_fix(
    settings: Settings, topics: Topics, scram_cluster: ScramCluster
) -> None:
    produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(3)])
    done, took = _consume_once(settings, scram_cluster.dsn(user=scram_cluster.stranger), PASSWORD)
    line = assert_one_line_error(done, 1, "permission denied", f"connected as role '{scram_cluster.stranger}'",
                                 "INSIGHTS_PG_DSN")
    assert "consumer_offsets" in line
    assert took < 45, took


def test_missing_database_stops_the_consumer_naming_the_fix(
    settings: Settings, topics: Topics, scram_cluster: ScramCluster
) -> None:
    produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(3)])
    done, took = _consume_once(settings, scram_cluster.dsn(dbname="no_such_db"), PASSWORD)
    assert_one_line_error(done, 1, 'database "no_such_db" does not exist', "`insights db migrate`",
                          "INSIGHTS_PG_DSN")
    assert took < 45, took


# --- waiting for a dependency that starts after the consumer ----------------------------


def _messages(service: ServiceProcess, text: str) -> list[dict]:
    return [r for r in service.records() if r.get("msg") == text]


def _wait_rows(pg_dsn: str, expected: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    found = -1
    while time.monotonic() < deadline:
        with psycopg.connect(pg_dsn) as conn:
            found = count(conn, "SELECT count(*) FROM product_snapshots")
        if found >= expected:
            return found
        time.sleep(0.5)
    return found


@pytest.mark.parametrize("dependency", ["kafka", "postgres"])
def test_consumer_started_before_its_dependency_waits_logs_once_each_way_and_stores(
    settings: Settings, topics: Topics, pg_dsn: str, dependency: str
) -> None:
    events = [scrape(n, 0) for n in range(20)]
    produce(settings, topics.scrape, "product_scraped", events)
    if dependency == "kafka":
        host, port = settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
        proxy = TcpProxy(host, int(port))
        env = default_service_env(consumer_env(settings, pg_dsn))
        env["INSIGHTS_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{proxy.port}"
    else:
        parts = conninfo_to_dict(pg_dsn)
        proxy = TcpProxy(parts.get("host") or "127.0.0.1", int(parts.get("port") or 5432))
        env = default_service_env(consumer_env(settings, make_conninfo(pg_dsn, host="127.0.0.1", port=str(proxy.port))))
    env["INSIGHTS_METRICS_PORT"] = str(free_port())
    proxy.cut()  # not started yet: its port refuses connections
    group = f"{settings.consumer.group}-{uuid.uuid4().hex[:6]}"
    service = ServiceProcess(["consume", "scrape", "--group", group, "--unreachable-after", "2"], env)
    try:
        service.wait_for_record(lambda r: r.get("msg") == f"{dependency} unreachable", timeout=60,
                                what=f"the {dependency} outage line")
        time.sleep(20)  # longer than the old 15 s topic check, and many retries
        assert service.process.poll() is None, f"the consumer gave up: {service.stderr[-5:]}"
        assert service.wait_health(503, timeout=10)["healthy"] is False
        proxy.restore()  # the dependency "starts"
        assert _wait_rows(pg_dsn, len(events)) == len(events)
        service.wait_for_record(lambda r: r.get("msg") == f"{dependency} reachable again", timeout=30,
                                what="the recovery line")
        assert service.wait_health(200, timeout=30)["healthy"] is True
    finally:
        code = service.terminate()
        proxy.close()
    assert code == 0, service.stderr[-10:]
    assert len(_messages(service, f"{dependency} unreachable")) == 1, [r.get("msg") for r in service.records()]
    assert len(_messages(service, f"{dependency} reachable again")) == 1
    assert not any("Traceback" in line for line in service.stderr)


def test_consumer_started_before_a_private_postgres_waits_and_stores(
    settings: Settings, topics: Topics, scram_cluster: ScramCluster
) -> None:
    # the same as above with a real server started after the consumer: the private
    # cluster is stopped, the consumer started, then the cluster started
    events = [scrape(100 + n, 0) for n in range(15)]
    produce(settings, topics.scrape, "product_scraped", events)
    env = default_service_env(consumer_env(settings, scram_cluster.dsn()))
    env.update(INSIGHTS_PG_PASSWORD=PASSWORD, INSIGHTS_METRICS_PORT=str(free_port()))
    group = f"{settings.consumer.group}-{uuid.uuid4().hex[:6]}"
    scram_cluster.server.down()
    service = ServiceProcess(["consume", "scrape", "--group", group, "--unreachable-after", "2"], env)
    try:
        service.wait_for_record(lambda r: r.get("msg") == "postgres unreachable", timeout=60, what="the outage line")
        time.sleep(5)
        assert service.process.poll() is None, f"the consumer gave up: {service.stderr[-5:]}"
        scram_cluster.server.up()
        dsn = make_conninfo(scram_cluster.dsn(), password=PASSWORD)
        deadline = time.monotonic() + 90
        stored = 0
        while time.monotonic() < deadline and stored < len(events):
            with psycopg.connect(dsn) as conn:
                stored = count(conn, "SELECT count(*) FROM product_snapshots WHERE asin = ANY(%s)",
                               [e.asin for e in events])
            time.sleep(0.5)
        assert stored == len(events)
        service.wait_for_record(lambda r: r.get("msg") == "postgres reachable again", timeout=30, what="the recovery")
    finally:
        code = service.terminate()
        scram_cluster.server.up()  # for the tests after this one
    assert code == 0, service.stderr[-10:]
    assert len(_messages(service, "postgres unreachable")) == 1, [r.get("msg") for r in service.records()]
    assert len(_messages(service, "postgres reachable again")) == 1
