"""Audit: pgaudit preloaded by the stack with the documented defaults, read back by
`insights db audit`. On a private cluster (preloading needs a new or restarted server)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from insights.db.audit import parse
from insights.stack.postgres import pgaudit_available
from tests.ops.conftest import PrivateCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ddl_grant_and_admin_writes_appear_in_db_audit(make_cluster: Callable[..., PrivateCluster]) -> None:
    private = make_cluster(0)
    assert pgaudit_available(), "postgresql-15-pgaudit is installed by the stack's package step"
    dsn = private.primary_dsn
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert "pgaudit" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert conn.execute("SHOW pgaudit.log").fetchone()[0] == "ddl, role"
        settings = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = 'app_admin'").fetchone()
        assert settings and "pgaudit.log=write, ddl" in settings[0]
        conn.execute("CREATE TABLE audited_ddl (id int)")
        conn.execute("GRANT SELECT ON audited_ddl TO app_readonly")
        conn.execute("INSERT INTO audited_ddl VALUES (1)")  # the owner's write: not audited by default
        conn.execute("ALTER ROLE app_admin LOGIN")  # a private cluster: log in as the admin role once
        # a TLS cluster (INSIGHTS_STACK_PG_TLS) asks every TCP login for its password; a
        # trusting one ignores it: a throw-away one, sent as a SCRAM verifier
        password = secrets.token_urlsafe(16)
        verifier = conn.pgconn.encrypt_password(password.encode(), b"app_admin", b"scram-sha-256").decode()
        conn.execute(sql.SQL("ALTER ROLE app_admin PASSWORD {}").format(sql.Literal(verifier)))
    with psycopg.connect(make_conninfo(dsn, user="app_admin", password=password), autocommit=True) as admin:
        admin.execute("INSERT INTO audited_ddl VALUES (2)")
    done = private.cli("db", "audit", "--since", since, "--json")
    assert done.returncode == 0, done.stderr
    text = private.cli("db", "audit", "--since", since)
    assert text.returncode == 0 and "audit entries since" in text.stdout, text.stderr
    entries = [json.loads(chunk) for chunk in _objects(done.stdout)]
    seen = {(e["audit_class"], e["command"], e["user"]) for e in entries}
    assert ("DDL", "CREATE TABLE", "insights") in seen, seen
    assert ("ROLE", "GRANT", "insights") in seen, seen
    assert ("WRITE", "INSERT", "app_admin") in seen, seen
    assert ("WRITE", "INSERT", "insights") not in seen, seen
    assert any(e["command"] == "GRANT" and "audited_ddl" in e["statement"] for e in entries)
    # --since filters: nothing from the future
    later = private.cli("db", "audit", "--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat(), "--json")
    assert later.returncode == 0 and later.stdout.strip() == ""


def _objects(text: str) -> list[str]:
    """Split pretty-printed JSON objects printed one after another."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
    return out


def test_parse_joins_continuation_lines_and_reads_csv_quotes() -> None:
    log = [
        "2026-12-01 06:58:00.123 UTC [41] insights@insights LOG:  AUDIT: SESSION,1,1,DDL,CREATE TABLE,TABLE,"
        'public.t,"CREATE TABLE t (a text DEFAULT \'x,y\',\n',
        "\tb int)\",<not logged>\n",
        "2026-12-01 06:58:01.000 UTC [41] insights@insights LOG:  statement: SELECT 1\n",
        "2026-12-01 06:58:02.000 UTC [42] bob@insights LOG:  AUDIT: SESSION,2,1,ROLE,GRANT,,,"
        "GRANT SELECT ON t TO app_readonly,<not logged>\n",
    ]
    entries = list(parse(log))
    assert [(e.audit_class, e.command, e.user) for e in entries] == [
        ("DDL", "CREATE TABLE", "insights"), ("ROLE", "GRANT", "bob")]
    assert entries[0].statement == "CREATE TABLE t (a text DEFAULT 'x,y',\nb int)"
    assert list(parse(log, since=datetime(2026, 12, 1, 6, 58, 1, tzinfo=UTC)))[0].user == "bob"
