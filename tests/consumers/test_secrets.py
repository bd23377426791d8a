"""Secrets never leak: every SecretStr setting holds a marker, and the marker appears nowhere
in what the commands print (DEBUG logging, JSON logs, --json), in the server logs written
meanwhile, in /metrics, or in DLQ headers.

The PostgreSQL password is the real one: the commands log in as a throw-away superuser
whose password is the marker, so on a stack that asks for passwords (TLS + SCRAM, the
default) the marker is what authenticates, and on a plain stack it is sent and ignored. A
PLAINTEXT broker ignores the SASL/SSL secrets. Either way every command runs its real path.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

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


@pytest.fixture
def marker_role(pg_admin_dsn: str, pg: psycopg.Connection) -> Iterator[tuple[str, str]]:
    """(role, marker): a superuser whose password is the marker, so that INSIGHTS_PG_PASSWORD
    set to the marker logs in (it overrides the stack's passfile, which has no line for it)."""
    marker = f"leak{uuid.uuid4().hex}"
    role = f"leak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        # the server gets only the SCRAM verifier: the marker never reaches its log
        verifier = admin.pgconn.encrypt_password(marker.encode(), role.encode(), b"scram-sha-256").decode("ascii")
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(verifier)))
    try:
        yield role, marker
    finally:
        # what the role made in the test's database (partitions) is the owner's again
        pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        pg.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
        pg.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_no_command_prints_or_logs_a_secret(
    settings: Settings, topics: Topics, pg: psycopg.Connection, caplog: pytest.LogCaptureFixture,
    marker_role: tuple[str, str],
) -> None:
    role, marker = marker_role
    secret_settings = settings.replace(
        pg_dsn=make_conninfo(settings.pg.dsn, user=role),
        kafka_sasl_password=marker, kafka_ssl_key_password=marker,
        pg_password=marker, pg_ingest_password=marker, pg_cdc_password=marker,
    )
    for attr, name in SECRET_FIELDS:
        assert getattr(getattr(secret_settings, attr), name).get_secret_value() == marker
    # the commands below log in with the marker (on a TLS stack nothing else would let them)
    with psycopg.connect(secret_settings.pg.conninfo(), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
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
