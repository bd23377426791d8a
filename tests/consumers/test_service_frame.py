"""``insights consume`` in the service frame, as real processes on the shared Kafka and PostgreSQL.

Default metrics settings on one host (two members of a group: both start, each on its
own port), JSON lines on stderr (librdkafka's included), and ``/healthz`` following
PostgreSQL's reachability, not only the loop's liveness.
"""

from __future__ import annotations

import socket
import time

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings
from tests.consumers.conftest import Topics, count, produce
from tests.consumers.events import scrape
from tests.consumers.procs import consumer_env
from tests.service_procs import ServiceProcess, TcpProxy, default_service_env, served_default_port_or_said_why

pytestmark = [pytest.mark.integration]


def _consume(env: dict[str, str], group: str, *extra: str) -> ServiceProcess:
    return ServiceProcess(["consume", "scrape", "--group", group, *extra], env)


def test_two_consumers_on_default_metrics_settings_both_start_and_are_healthy_on_their_own_ports(
    settings: Settings, topics: Topics, pg: psycopg.Connection, pg_dsn: str
) -> None:
    env = default_service_env(consumer_env(settings, pg_dsn))
    group = settings.consumer.group
    members = [_consume(env, group), _consume(env, group)]
    try:
        ports = [m.port() for m in members]
        assert ports[0] != ports[1]
        for member in members:
            served_default_port_or_said_why(member)
            assert member.wait_health(200)["healthy"] is True

        produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(40)])
        deadline = time.monotonic() + 60
        while count(pg, "SELECT count(*) FROM product_snapshots") < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(pg, "SELECT count(*) FROM product_snapshots") == 40

        bodies = [m.get("/metrics") for m in members]
        for status, body in bodies:
            text = body.decode()
            assert status == 200
            assert f'insights_consumer_info{{group="{group}",sink="scrape"}} 1.0' in text
            assert "process_resident_memory_bytes" in text and "python_info" in text
        consumed = sum(
            float(line.rsplit(" ", 1)[1])
            for _, body in bodies
            for line in body.decode().splitlines()
            if line.startswith("insights_consumer_messages_total{")
        )
        assert consumed == 40  # the two members' counters together saw every record once
        for member in members:
            assert member.wait_health(200)["healthy"] is True
    finally:
        codes = [m.terminate() for m in members]
    assert codes == [0, 0]
    for member in members:
        records = member.records()  # every stderr line is one JSON object
        assert any(r.get("msg") == "service consume-scrape started" for r in records)
        assert all(r.get("service") == "consume-scrape" for r in records)
        assert any("scrape: stopped cleanly" in line for line in member.stdout)


def test_healthz_fails_while_postgres_is_unreachable_longer_than_the_threshold_and_recovers(
    settings: Settings, topics: Topics, pg_dsn: str
) -> None:
    parts = conninfo_to_dict(pg_dsn)
    proxy = TcpProxy(parts.get("host") or "127.0.0.1", int(parts.get("port") or 5432))
    through_proxy = make_conninfo(pg_dsn, host="127.0.0.1", port=str(proxy.port))
    env = default_service_env(consumer_env(settings, through_proxy))
    member = _consume(env, settings.consumer.group, "--unreachable-after", "2")
    try:
        assert member.wait_health(200)["healthy"] is True
        proxy.cut()
        report = member.wait_health(503, timeout=30)
        assert report["healthy"] is False
        assert any(reason.startswith("postgres unreachable for") for reason in report["reasons"]), report
        proxy.restore()
        assert member.wait_health(200, timeout=30)["reasons"] == []
        # the loop may report the recovery first; the probe says so in the log on its next turn
        member.wait_for_record(lambda r: r.get("msg") == "postgres reachable again", timeout=30, what="the recovery")
    finally:
        proxy.close()
        code = member.terminate()
    assert code == 0
    records = member.records()
    assert any(r.get("msg") == "postgres unreachable" and r.get("level") == "warning" for r in records)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_librdkafka_lines_of_a_consumer_that_cannot_reach_kafka_are_json_and_healthz_says_kafka(
    settings: Settings, pg_dsn: str
) -> None:
    env = default_service_env(consumer_env(settings, pg_dsn))
    env["INSIGHTS_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{_closed_port()}"
    member = _consume(env, settings.consumer.group, "--unreachable-after", "2")
    try:
        member.wait_for_record(lambda r: r.get("logger") == "librdkafka", timeout=30, what="a librdkafka line")
        report = member.wait_health(503, timeout=30)
        assert any(reason.startswith("kafka unreachable for") for reason in report["reasons"]), report
    finally:
        member.terminate()  # it may end with an error (no broker): its lines are what is tested
    records = member.records()
    librdkafka = [r for r in records if r["logger"] == "librdkafka"]
    assert librdkafka and all("Connect to" in r["msg"] or r["msg"].split(" ", 1)[0].isupper() for r in librdkafka)
    assert not any(line.lstrip().startswith("%") for line in member.stderr)
