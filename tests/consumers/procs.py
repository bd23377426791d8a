"""Consumers as real subprocesses (``insights consume ...``), for the kill and restart tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings
from tests.fix_services import child_env

INSIGHTS = str(Path(sys.executable).with_name("insights"))


def consumer_env(settings: Settings, pg_dsn: str | None = None, **extra: str) -> dict[str, str]:
    parts = conninfo_to_dict(pg_dsn or settings.pg.conninfo())
    parts.pop("password", None)
    return child_env(
        settings.replace(pg_dsn=make_conninfo(**parts)),
        INSIGHTS_METRICS_PORT="0",
        INSIGHTS_LOG_JSON="true",
        # a killed member's partitions move after the session timeout: keep it short
        INSIGHTS_KAFKA_OVERRIDES=json.dumps({"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}),
        **extra,
    )


def start_consumer(sink: str, env: dict[str, str], group: str, log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - closed with the process by the OS
    return subprocess.Popen(
        [INSIGHTS, "consume", sink, "--group", group], env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def terminate(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout)
