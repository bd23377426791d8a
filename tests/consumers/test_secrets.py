"""Secrets never leak: every SecretStr setting holds a marker, and the marker appears nowhere
in what the commands print (DEBUG logging, JSON logs, --json), in the server logs written
meanwhile, in /metrics, or in DLQ headers.

The shared stack trusts loopback connections, so a marker password still connects, and a
PLAINTEXT broker ignores the SASL/SSL secrets: every command runs its real path.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import psycopg
import pytest

from core.settings import Settings
from streams.dlq import H_REASON
from tests.cli.helpers import run_cli
from tests.consumers.conftest import Topics, dlq_entries, produce, run_until_idle
from tests.consumers.events import scrape
from tests.fix_services import child_env

pytestmark = pytest.mark.integration

SECRET_FIELDS = [
    ("kafka", "sasl_password"), ("kafka", "ssl_key_password"),
    ("pg", "password"), ("pg", "ingest_password"), ("pg", "cdc_password"),
]


def _secret_fields(settings: Settings) -> list[tuple[str, str]]:
    found = []
    for attr in type(settings).model_fields:
        part = getattr(settings, attr)
        for name, info in type(part).model_fields.items():
            if "SecretStr" in str(info.annotation):
                found.append((attr, name))
    return found


def _server_logs() -> list[Path]:
    stack = os.environ.get("INSIGHTS_STACK_DIR")
    if not stack:
        return []
    return [p for p in (Path(stack) / "pg" / "server.log", Path(stack) / "kafka" / "server.log") if p.exists()]


def test_the_list_of_secrets_is_every_secret_setting(settings: Settings) -> None:
    assert sorted(_secret_fields(settings)) == sorted(SECRET_FIELDS)


def test_no_command_prints_or_logs_a_secret(
    settings: Settings, topics: Topics, pg: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"leak{uuid.uuid4().hex}"
    secret_settings = settings.replace(
        kafka_sasl_password=marker, kafka_ssl_key_password=marker,
        pg_password=marker, pg_ingest_password=marker, pg_cdc_password=marker,
    )
    for attr, name in SECRET_FIELDS:
        assert getattr(getattr(secret_settings, attr), name).get_secret_value() == marker
    offsets = {p: p.stat().st_size for p in _server_logs()}

    env = child_env(secret_settings, INSIGHTS_LOG_LEVEL="DEBUG", INSIGHTS_LOG_JSON="true",
                    INSIGHTS_CDC_SLOT_NAME=f"leak_{uuid.uuid4().hex[:8]}")
    unreachable = {**env, "INSIGHTS_PG_DSN": "postgresql://insights@127.0.0.1:1/nowhere"}
    commands: list[tuple[list[str], dict[str, str]]] = [
        (["--help"], env),
        (["status"], env),
        (["status", "--json"], env),
        (["topics", "create"], env),
        (["topics", "list"], env),
        (["produce", "scrape", "--products", "3", "--events", "20"], env),
        (["consume", "scrape", "--exit-when-idle", "3", "--metrics-port", "0"], env),
        (["db", "migrate", "--dry-run"], env),
        (["db", "grants"], env),
        (["db", "stats", "--primary"], env),
        (["db", "partitions", "status"], env),
        (["replay", "dlq", "--topic", topics.scrape, "--dry-run"], env),
        (["dlq", "list", "--topic", topics.scrape], env),
        (["schemas", "check"], env),
        (["summaries", "status"], env),
        (["cdc", "status"], env),
        (["status", "--json"], unreachable),  # failures quote the connection, never its password
        (["db", "migrate"], unreachable),
    ]
    ran = 0
    for args, cmd_env in commands:
        done = run_cli(*args, env=cmd_env, timeout=180)
        assert marker not in done.stdout, (args, "stdout")
        assert marker not in done.stderr, (args, "stderr")
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        ran += 1
    assert ran == len(commands)

    # in process: DEBUG logs of a consumer that dead-letters a record, its /metrics, the DLQ headers
    caplog.set_level(logging.DEBUG)
    produce(secret_settings, topics.scrape, "product_scraped",
            [scrape(1, 0), (b"B000000002", b"not avro at all")])
    loop = run_until_idle(secret_settings, "scrape", idle=2)
    assert loop.totals.dead_letters >= 1  # the CLI run may have left records of its own
    assert marker not in caplog.text
    assert marker not in loop.metrics.exposition().decode()
    letters = dlq_entries(secret_settings, topics.scrape, expect=loop.totals.dead_letters)
    assert letters and letters[0][H_REASON]
    assert all(marker not in f"{k}={v}" for entry in letters for k, v in entry.items())
    assert marker not in repr(secret_settings) and marker not in str(secret_settings.model_dump())

    for path, start in offsets.items():
        with path.open("rb") as f:
            f.seek(start)
            assert marker.encode() not in f.read(), path
