"""``insights summaries sweep --every``: a service like the others, not a loop printing rich text.

JSON log lines, ``/metrics`` and ``/healthz`` on the default port (or the next free one),
a PostgreSQL outage reported as unhealthy and survived (the sweep retries, it does not
exit), SIGTERM between sweeps.
"""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings
from tests.fix_services import child_env
from tests.service_procs import ServiceProcess, TcpProxy, default_service_env, served_default_port_or_said_why

pytestmark = pytest.mark.integration


def test_sweep_every_is_a_service_that_survives_postgres_going_away(settings: Settings, pg_dsn: str) -> None:
    parts = conninfo_to_dict(pg_dsn)
    proxy = TcpProxy(parts.get("host") or "127.0.0.1", int(parts.get("port") or 5432))
    password = parts.pop("password", None)
    through_proxy = make_conninfo(**{**parts, "host": "127.0.0.1", "port": str(proxy.port)})
    env = default_service_env(child_env(settings.replace(pg_dsn=through_proxy, pg_password=password)))
    sweeper = ServiceProcess(["summaries", "sweep", "--every", "1", "--unreachable-after", "2"], env)

    def swept() -> int:
        return sum(1 for r in sweeper.records() if r.get("msg", "").startswith("swept:"))

    try:
        served_default_port_or_said_why(sweeper)
        sweeper.wait_for_record(lambda r: r.get("msg", "").startswith("swept:"), what="a first sweep")
        assert sweeper.wait_health(200)["healthy"] is True
        status, body = sweeper.get("/metrics")
        assert status == 200
        assert b'insights_summaries_sweep_rows_total{kind="recomputed"}' in body
        assert b"insights_summaries_sweep_last_success_timestamp_seconds" in body and b"process_cpu_seconds_total" in body

        proxy.cut()
        sweeper.wait_for_record(lambda r: r.get("msg") == "sweep failed, retrying", what="a failed sweep")
        report = sweeper.wait_health(503, timeout=30)
        assert any(reason.startswith("postgres unreachable for") for reason in report["reasons"]), report
        before = swept()
        proxy.restore()
        assert sweeper.wait_health(200, timeout=30)["healthy"] is True
        sweeper.wait_for_record(lambda _r: swept() > before, what="a sweep after the outage")
    finally:
        proxy.close()
        code = sweeper.terminate()
    assert code == 0
    records = sweeper.records()  # every stderr line is one JSON object
    assert all(r.get("service") == "summaries-sweep" for r in records)
    assert not sweeper.stdout or all(not line.strip() for line in sweeper.stdout)  # no rich text in the loop


def test_a_permanent_error_ends_the_service_with_its_one_line_as_json(settings: Settings, pg_admin_dsn: str) -> None:
    # the server's maintenance database has no summaries schema: waiting will not fix that
    parts = conninfo_to_dict(make_conninfo(pg_admin_dsn, dbname="postgres"))
    password = parts.pop("password", None)
    env = default_service_env(child_env(settings.replace(pg_dsn=make_conninfo(**parts), pg_password=password)))
    sweeper = ServiceProcess(["summaries", "sweep", "--every", "1"], env)
    code = sweeper.process.wait(60)
    sweeper.terminate()
    assert code == 1
    records = sweeper.records()  # the error line too is one JSON object
    last = records[-1]
    assert last["level"] == "error" and last["msg"].startswith("insights: error: ") and "run `insights db migrate`" in last["msg"], last
    assert last["exit_code"] == 1
    assert not any("Traceback" in line for line in sweeper.stderr)
