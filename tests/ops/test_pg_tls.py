"""PostgreSQL TLS + SCRAM on a private stack made with INSIGHTS_STACK_PG_TLS=true: plain TCP
and wrong passwords are refused, verify-full connects, a certificate for another host is refused."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from insights.stack import proc, tls
from insights.stack.postgres import LocalPostgres
from tests.ops.conftest import PrivateCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _refused(dsn: str, **params: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(make_conninfo(dsn, **params), connect_timeout=5).close()
    return str(caught.value)


def test_tls_and_scram_are_enforced(make_cluster: Callable[..., PrivateCluster]) -> None:
    private = make_cluster(0, stack_pg_tls=True)
    pg = LocalPostgres(private.settings)
    assert pg.tls
    dsn = pg.dsn
    params = conninfo_to_dict(dsn)
    assert params["sslmode"] == "verify-full" and params["sslrootcert"].endswith("ca.crt")
    assert "password" not in params  # the password lives in the 0600 passfile only
    assert stat.S_IMODE(os.stat(pg.passfile).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pg.tls_dir / "ca.key").st_mode) == 0o600

    # verify-full connects, over TLS 1.3, with the password from the passfile (SCRAM)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (
            True, "TLSv1.3")
        method = conn.execute("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'hostssl' LIMIT 1").fetchone()
        assert method == ("scram-sha-256",)
        # the migration ran through this DSN (the fixture's migrate)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0

    no_passfile = {k: v for k, v in params.items() if k != "passfile"}
    plain = make_conninfo("", **no_passfile)
    # a non-TLS TCP connection is refused (even with the right password)
    password = tls.read_passfile(pg.passfile)["insights"]
    assert "no encryption" in _refused(plain, sslmode="disable", password=password)
    # a wrong password is refused
    assert "password authentication failed" in _refused(plain, password="not-the-password")
    # no password at all is refused (trust is gone from TCP)
    assert "password" in _refused(plain, passfile="/dev/null")

    # a server certificate for another host (same CA) is refused by verify-full
    other_crt, other_key = tls.issue(pg.tls_dir, "otherhost", sans=("DNS:otherhost.invalid",), cn="otherhost.invalid")
    data = pg.paths.data
    user = proc.service_user() if proc.is_root() else None
    shutil.copy(other_crt, data / "server.crt")
    shutil.copy(other_key, data / "server.key")
    if user:
        os.chown(data / "server.crt", user.pw_uid, user.pw_gid)
        os.chown(data / "server.key", user.pw_uid, user.pw_gid)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    assert proc.wait_for(lambda: _fails(dsn), 10), "verify-full accepted a certificate for another host"
    assert "does not match host name" in _refused(dsn) or "certificate" in _refused(dsn)
    # require (encryption without checking the name) still connects: the refusal is verify-full's
    with psycopg.connect(make_conninfo(dsn, sslmode="require")) as conn:
        conn.execute("SELECT 1")


def _fails(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError:
        return True
    return False
