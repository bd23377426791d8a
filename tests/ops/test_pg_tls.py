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


def test_db_passwords_generate_gives_the_service_roles_logins_kept_in_the_passfile(
    make_cluster: Callable[..., PrivateCluster],
) -> None:
    private = make_cluster(0, stack_pg_tls=True)
    pg = LocalPostgres(private.settings)
    dsn = pg.dsn
    passfile_before = tls.read_passfile(pg.passfile)

    done = private.cli("db", "passwords", "--generate", INSIGHTS_PG_DSN=dsn)
    assert done.returncode == 0, done.stderr
    after = tls.read_passfile(pg.passfile)
    assert after["insights"] == passfile_before["insights"]  # the superuser's line is kept
    generated = {role: after[role] for role in ("insights_ingest", "insights_cdc")}
    assert len(set(generated.values())) == 2 and all(len(p) >= 32 for p in generated.values())
    assert stat.S_IMODE(os.stat(pg.passfile).st_mode) == 0o600
    for role, password in generated.items():  # never printed
        assert password not in done.stdout + done.stderr
        assert f"password set for {role} (generated, in {pg.passfile})" in done.stdout

    # each service role logs in over verify-full + SCRAM with the DSN's passfile alone
    for role in generated:
        with psycopg.connect(make_conninfo(dsn, user=role)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)

    # again: the same passwords, set again ("kept")
    again = private.cli("db", "passwords", "--generate", INSIGHTS_PG_DSN=dsn)
    assert again.returncode == 0, again.stderr
    assert "insights_ingest (kept" in again.stdout
    assert {r: tls.read_passfile(pg.passfile)[r] for r in generated} == generated

    # --rotate: new passwords; the old one is refused, the file's new one logs in
    rotated = private.cli("db", "passwords", "--generate", "--rotate", INSIGHTS_PG_DSN=dsn)
    assert rotated.returncode == 0, rotated.stderr
    now = tls.read_passfile(pg.passfile)
    assert all(now[r] != generated[r] for r in generated)
    plain = make_conninfo(dsn, passfile="/dev/null", user="insights_ingest")
    assert "password authentication failed" in _refused(plain, password=generated["insights_ingest"])
    with psycopg.connect(make_conninfo(dsn, user="insights_ingest")) as conn:
        conn.execute("SELECT 1")


def test_db_passwords_generate_without_a_passfile_says_where() -> None:
    from tests.cli.helpers import run_cli

    done = run_cli("db", "passwords", "--generate", INSIGHTS_PG_DSN="postgresql://insights@127.0.0.1:1/none",
                   PGPASSFILE="")
    assert done.returncode == 2, done.stderr
    assert "--passfile PATH" in done.stderr and "Traceback" not in done.stderr


def test_without_insights_pg_dsn_commands_use_the_tls_stacks_own_dsn(
    make_cluster: Callable[..., PrivateCluster],
) -> None:
    """After `insights stack up` on a TLS stack (the default), `insights db stats` and the other
    commands work without exporting the printed INSIGHTS_PG_DSN: the built-in default has
    neither the CA nor the passfile and would be refused."""
    import subprocess

    from tests.fix_services import child_env
    from tests.ops.conftest import INSIGHTS

    private = make_cluster(0, stack_pg_tls=True)
    env = {k: v for k, v in child_env(private.settings).items() if k not in ("INSIGHTS_PG_DSN", "INSIGHTS_PG_READ_DSN")}
    done = subprocess.run([INSIGHTS, "db", "stats"], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    port = private.settings.stack.pg_port  # not the built-in default's 55432 (the shared stack's)
    assert f"on port {port}" in " ".join(done.stdout.split()), done.stdout
    # an explicit DSN still wins: the plain one is refused by the TLS server, with one line
    plain = f"postgresql://insights@127.0.0.1:{port}/insights"
    refused = subprocess.run([INSIGHTS, "db", "stats"], env={**env, "INSIGHTS_PG_DSN": plain}, capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
