"""Item 1 of issue 10: predictable operator failures end in one line naming the fix, a
non-zero exit code and no traceback; a bug ends in one line and a traceback file."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from core.settings import Settings
from insights.db.roles import set_passwords
from streams.topics import event_topics
from tests.cli.fake_pg import password_refusing_server
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.fix_pg import dsn_for_database
from tests.fix_services import child_env

# a port nothing listens on: connections are refused at once
CLOSED = "127.0.0.1:1"


# --- .env ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"INSIGHTS_BATCH_SIZE=10\nthis is junk\n", "line 2: not NAME=value"),
        (b"INSIGHTS_BATCH_SIZE=10\n\n\nINSIGHTS_PG_PASSWORD=\"s3cret\n", "line 4: an unclosed quote"),
        (b"INSIGHTS_LOG_LEVEL=INFO\n# caf\xe9\n", "line 2: not UTF-8 (byte 0xe9): save the file as UTF-8"),
        (b"INSIGHTS_BACH_SIZE=10\n", "line 1: unknown setting INSIGHTS_BACH_SIZE (did you mean INSIGHTS_BATCH_SIZE?)"),
        (b"INSIGHTS_BATCH_SIZE\n", "line 1: INSIGHTS_BATCH_SIZE has no '=value'"),
    ],
    ids=["junk-line", "unclosed-quote", "not-utf8", "misspelt-setting", "no-value"],
)
def test_broken_env_file_stops_with_its_path_and_line(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / ".env").write_bytes(content)
    done = run_cli("db", "stats", cwd=tmp_path)
    line = assert_one_line_error(done, 2, str(tmp_path / ".env"), says)
    assert "s3cret" not in line  # a broken line may hold a secret: never echoed


def test_a_valid_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comment\n\nexport INSIGHTS_PG_DSN='postgresql://insights@127.0.0.1:1/from_env_file'\nOTHER_TOOL=x\n"
    )
    done = run_cli("db", "stats", cwd=tmp_path)
    # the DSN came from the file: the failure names its address
    assert_one_line_error(done, 1, "PostgreSQL at 127.0.0.1:1 refuses connections")


# --- PostgreSQL ---------------------------------------------------------------------------


def test_postgres_connection_refused_is_one_line() -> None:
    done = run_cli("db", "stats", INSIGHTS_PG_DSN=f"postgresql://insights@{CLOSED}/insights")
    assert_one_line_error(done, 1, "PostgreSQL at 127.0.0.1:1 refuses connections", "INSIGHTS_PG_DSN",
                          "`insights stack up`")


@pytest.mark.parametrize("command", [["db", "stats"], ["db", "migrate"]])
def test_wrong_password_is_one_line(command: list[str]) -> None:
    with password_refusing_server() as port:
        done = run_cli(
            *command, INSIGHTS_PG_DSN=f"postgresql://insights@127.0.0.1:{port}/insights", INSIGHTS_PG_PASSWORD="wrong"
        )
    line = assert_one_line_error(done, 1, f"PostgreSQL at 127.0.0.1:{port} rejected the password of role 'insights'",
                                 "INSIGHTS_PG_PASSWORD")
    assert "wrong" not in line


def test_missing_password_is_one_line() -> None:
    with password_refusing_server() as port:
        done = run_cli("db", "stats", INSIGHTS_PG_DSN=f"postgresql://insights@127.0.0.1:{port}/insights",
                       PGPASSFILE="/nonexistent")
    assert_one_line_error(done, 1, "asks for a password for role 'insights'", "set INSIGHTS_PG_PASSWORD")


@pytest.fixture
def empty_database(pg_admin_dsn: str) -> Iterator[str]:
    """A database nobody migrated."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield dsn_for_database(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _as(settings: Settings, dsn: str, **parts: str) -> Settings:
    found = conninfo_to_dict(dsn)
    password = found.pop("password", None)
    found.update(parts)
    if parts.get("user") and parts["user"] != conninfo_to_dict(dsn).get("user"):
        password = _login_password(dsn, make_conninfo(**found)) or password
    return settings.replace(pg_dsn=make_conninfo(**found), pg_password=password)


def _login_password(owner_dsn: str, role_dsn: str) -> str | None:
    """A server with password authentication (a stack made with INSIGHTS_STACK_PG_TLS) lets a
    service role in only with a password: give it a throw-away one, for this test only. A
    trusting server (the shared stack) is left alone."""
    try:
        psycopg.connect(role_dsn, connect_timeout=5, passfile="/dev/null").close()
        return None
    except psycopg.OperationalError as exc:
        if "password" not in str(exc):
            raise
    role = conninfo_to_dict(role_dsn)["user"]
    secret = SecretStr(f"t-{uuid.uuid4().hex}")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        set_passwords(conn, {role: secret})
    return secret.get_secret_value()


@pytest.mark.integration
def test_consume_before_migrate_says_to_migrate(
    settings: Settings, empty_database: str, make_topic
) -> None:
    for spec in event_topics(settings):
        if spec.value_subject == "product_scraped" or spec.name.endswith("product_scraped.dlq"):
            make_topic(name=spec.name, partitions=1)
    unmigrated = _as(settings, empty_database)
    done = run_cli("consume", "scrape", "--exit-when-idle", "20", env=child_env(unmigrated, INSIGHTS_LOG_LEVEL="ERROR"),
                   timeout=180)
    database = conninfo_to_dict(empty_database)["dbname"]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 1, done.stderr
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last == (
        f"insights: error: database '{database}' not migrated (relation \"consumer_offsets\" does not exist): "
        "run `insights db migrate`"
    )


@pytest.mark.integration
def test_migrate_as_the_ingest_role_names_the_owner(settings: Settings, pg: psycopg.Connection, pg_dsn: str) -> None:
    owner = pg.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'schema_migrations'::regclass"
                       ).fetchone()[0]
    ingest = _as(settings, pg_dsn, user="insights_ingest")
    done = run_cli("db", "migrate", env=child_env(ingest))
    assert_one_line_error(
        done, 1, "db migrate: permission denied", "for role 'insights_ingest'", f"it must run as '{owner}'",
        "set INSIGHTS_PG_DSN",
    )
    unchanged = pg.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    assert unchanged > 0


@pytest.mark.integration
def test_maintain_as_the_ingest_role_names_the_owner(settings: Settings, pg_dsn: str) -> None:
    done = run_cli("db", "maintain", env=child_env(_as(settings, pg_dsn, user="insights_ingest")))
    assert_one_line_error(done, 1, "db maintain (", "for role 'insights_ingest'", "it must run as",
                          after_progress=True)


# --- Kafka and the schema registry ----------------------------------------------------------


def test_kafka_down_is_one_line() -> None:
    done = run_cli("produce", "scrape", "-m", "1", INSIGHTS_KAFKA_BOOTSTRAP_SERVERS=CLOSED, timeout=180)
    assert_one_line_error(done, 1, f"Kafka at {CLOSED} does not answer", "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS")


def test_registry_that_does_not_answer_names_its_url() -> None:
    by_option = run_cli("schemas", "register", "--url", "http://127.0.0.1:1")
    line = assert_one_line_error(by_option, 1, "schema registry at http://127.0.0.1:1 does not answer",
                                 "INSIGHTS_SCHEMA_REGISTRY_URL")
    assert "None" not in line
    by_setting = run_cli("schemas", "register", INSIGHTS_SCHEMA_REGISTRY_URL="http://127.0.0.1:1")
    assert_one_line_error(by_setting, 1, "schema registry at http://127.0.0.1:1 does not answer")


# --- bugs -----------------------------------------------------------------------------------


def test_unexpected_error_is_one_line_and_its_traceback_is_in_a_file(tmp_path: Path) -> None:
    import os
    import subprocess

    # a command that fails the way a bug does, registered on the real app and run by run()
    program = (
        "from insights.cli.main import app, run\n"
        "@app.command('explode')\n"
        "def explode():\n"
        "    {}['missing key']\n"
        "run()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHTS_")}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", program, "explode"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert "Traceback" not in done.stderr + done.stdout
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("insights: unexpected error: KeyError: 'missing key' (full traceback in ")
    logged = list(tmp_path.glob("insights-traceback-*.log"))
    assert len(logged) == 1 and str(logged[0]) in line
    text = logged[0].read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'missing key'" in text
    assert oct(logged[0].stat().st_mode & 0o777) == "0o600"  # it may quote data: private
