"""``insights cdc run`` in the service frame: a reader and its hot standby on one host, default settings.

Both start (the second endpoint takes the next free port instead of crashing), both are
healthy (waiting for the slot is the standby's job), the reader answers ``/metrics``
with its change counters and the process metrics, and every stderr line is JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings
from tests.cdc.conftest import wait_for
from tests.fix_services import child_env
from tests.service_procs import ServiceProcess, default_service_env, served_default_port_or_said_why

pytestmark = pytest.mark.integration


def _env(settings: Settings) -> dict[str, str]:
    parts = conninfo_to_dict(settings.pg.dsn)
    return default_service_env(child_env(settings.replace(pg_dsn=make_conninfo(**parts))))


def _holder(pg: psycopg.Connection[Any], settings: Settings) -> int | None:
    """The walsender pid streaming the slot, None while nobody holds it."""
    row = pg.execute(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (settings.cdc.slot_name,)
    ).fetchone()
    return row[0] if row else None


def _metric(body: bytes, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines() if line.startswith(prefix))


def test_reader_and_hot_standby_on_default_settings_both_start_healthy_and_serve_metrics(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    env = _env(cdc_settings)
    first = ServiceProcess(["cdc", "run"], env)
    second: ServiceProcess | None = None
    try:
        first.port()
        wait_for(lambda: _holder(pg, cdc_settings) is not None, timeout=60, what="the first reader to stream")
        second = ServiceProcess(["cdc", "run"], env)
        second.wait_for_record(lambda r: r.get("msg") == "hot standby: slot busy, retrying", what="the standby notice")
        readers = [first, second]
        assert first.port() != second.port()
        for reader in readers:
            served_default_port_or_said_why(reader)
            assert reader.wait_health(200) == {"healthy": True, "reasons": []}

        pg.execute(
            sql.SQL("INSERT INTO {}.products (asin, title) SELECT 'S' || g, 't' || g FROM generate_series(1, 25) g")
            .format(sql.Identifier(cdc_schema))
        )
        changes = f'insights_cdc_changes_total{{op="c",slot="{cdc_settings.cdc.slot_name}",table="products"}}'
        deadline = time.monotonic() + 60
        while _metric(first.get("/metrics")[1], changes) < 25 and time.monotonic() < deadline:
            time.sleep(0.3)
        status, body = first.get("/metrics")
        assert status == 200 and _metric(body, changes) == 25
        assert "insights_cdc_confirmed_lsn{" in body.decode()
        # `cdc status` shows the reader's own view from that endpoint
        shown = subprocess.run(
            [sys.executable, "-m", "insights", "cdc", "status", "--json",
             "--reader", f"http://127.0.0.1:{first.port()}/metrics"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)["reader"]
        assert view["answering"] is True and view["connected"] is True and view["paused"] is False
        assert view["changes"] == 25 and view["stream_losses"] == 0
        assert view["confirmed_lsn"] and "/" in view["confirmed_lsn"]
        assert view["last_event_commit_time"] and view["last_event_commit_time"].startswith("20")
        nobody = subprocess.run(
            [sys.executable, "-m", "insights", "cdc", "status", "--json", "--reader", "http://127.0.0.1:1/metrics"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert nobody.returncode == 0 and json.loads(nobody.stdout)["reader"]["answering"] is False
        standby_status, standby_body = second.get("/metrics")
        assert standby_status == 200 and _metric(standby_body, changes) == 0  # it has streamed nothing
        for _, text in ((status, body), (standby_status, standby_body)):
            assert b"process_cpu_seconds_total" in text and b"python_info" in text
        for reader in readers:
            assert reader.wait_health(200)["healthy"] is True
    finally:
        codes = [r.terminate() for r in (first, second) if r is not None]
    assert codes == [0, 0]
    for reader in (first, second):
        assert reader is not None
        records = reader.records()  # every stderr line is one JSON object
        assert all(r.get("service") == "cdc-run" for r in records)
        assert any(r.get("msg", "").startswith("stopped; confirmed") for r in records)
