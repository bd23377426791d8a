"""`insights cdc run` as real processes: SIGKILL mid-stream, a hot standby taking over, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings
from streams.cdc import slot as slots
from tests.cdc.conftest import wait_for
from tests.fix_services import child_env

pytestmark = pytest.mark.integration


def _env(settings: Settings) -> dict[str, str]:
    parts = conninfo_to_dict(settings.pg.dsn)
    return child_env(
        settings.replace(pg_dsn=make_conninfo(**parts)),
        INSIGHTS_METRICS_PORT="0",
        INSIGHTS_CDC_HEARTBEAT_INTERVAL_S="1",
        INSIGHTS_CDC_STATUS_INTERVAL_S="0.2",
        INSIGHTS_CDC_STANDBY_RETRY_S="0.5",
    )


def _start(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "insights", "cdc", "run"],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _active_pid(settings: Settings) -> int | None:
    with slots.connect(settings.pg) as conn:
        status = slots.slot_status(conn, settings.cdc.slot_name)
    return status.active_pid if status else None


def test_sigkill_loses_nothing_standby_takes_over_and_sigterm_exits_0(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any
) -> None:
    from streams.cdc.reader import CdcReader

    CdcReader(cdc_settings).setup()
    insert = sql.SQL(
        "INSERT INTO {}.products (asin, title) SELECT 'K' || g, 'row ' || g FROM generate_series(%s::int, %s::int) g"
    ).format(sql.Identifier(cdc_schema))
    first = _start(cdc_settings)
    second = None
    try:
        wait_for(lambda: _active_pid(cdc_settings) is not None, timeout=30, what="the first reader to stream")
        first_walsender = _active_pid(cdc_settings)
        second = _start(cdc_settings)  # hot standby: the slot is busy
        total = 0
        for batch in range(20):  # 20 transactions of 500 rows
            pg.execute(insert, (batch * 500 + 1, batch * 500 + 500))
            total += 500
            if batch == 10:
                first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL
        # the dead reader's walsender lingers until it notices; the standby's is a new one
        wait_for(
            lambda: _active_pid(cdc_settings) not in (None, first_walsender),
            timeout=60,
            what="the standby to take over",
        )
        reader = events("products")
        got = reader.read_distinct_keys(total, timeout=120)
        keys = {k for k, _, _ in got}
        assert len(keys) == total  # no change is missing
        lsns: dict[bytes | None, set[tuple[int, int]]] = {}
        for key, _, value in got:
            lsns.setdefault(key, set()).add((value["source"]["lsn"], value["source"]["commit_lsn"]))
        assert all(len(v) == 1 for v in lsns.values()), "a duplicate carried a different LSN"
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        assert second.returncode == 0, second.stderr.read().decode() if second.stderr else ""
        # SIGTERM confirmed everything delivered: nothing left behind the slot but heartbeats
        with slots.connect(cdc_settings.pg) as conn:
            status = slots.slot_status(conn, cdc_settings.cdc.slot_name)
            last_commit = max(v["source"]["commit_lsn"] for _, _, v in got)
        from streams.cdc.lsn import parse_lsn

        assert status is not None and parse_lsn(status.confirmed_flush_lsn or "0/0") > last_commit
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
