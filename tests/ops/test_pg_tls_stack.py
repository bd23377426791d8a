"""Everything the local stack starts, on a TLS stack (INSIGHTS_STACK_PG_TLS=true): streaming
replicas, PgBouncer, pgBackRest backups and restores, and a failover.

One private cluster for the module (a primary archiving through pgBackRest and two replicas,
made by the project's own code as ``insights stack up --replicas 2`` makes them). The tests
run in file order; the failover comes last because it changes the cluster.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from insights.stack import proc, tls
from insights.stack.pgbouncer import LocalPgBouncer, PgBouncerTarget
from insights.stack.postgres import LocalPostgres
from tests.ops.conftest import PrivateCluster, free_ports, scalar, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the TLS session of the connection that runs it (the server side of it)
MY_SSL = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def stack(make_cluster) -> PrivateCluster:  # type: ignore[no-untyped-def]
    private: PrivateCluster = make_cluster(2, archive=True, stack_pg_tls=True)
    assert private.refresh().primary.tls
    return private


def _refused(dsn: str, **params: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(make_conninfo(dsn, **params), connect_timeout=5).close()
    return str(caught.value)


def _service_uid() -> int:
    return proc.service_user().pw_uid if proc.is_root() else os.getuid()


def test_replicas_stream_over_verify_full_and_answer_reads_through_their_dsn(stack: PrivateCluster) -> None:
    cluster = stack.refresh()
    primary, replicas = cluster.primary, cluster.replicas()
    ca = str(tls.stack_ca_dir(stack.root) / "ca.crt")
    assert len(replicas) == 2
    for replica in replicas:
        # the walreceiver's own passfile: only the server's OS user may read it
        info = os.stat(replica.walreceiver_passfile)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == _service_uid()
        with psycopg.connect(replica.admin_dsn, autocommit=True) as conn:
            conninfo = conninfo_to_dict(conn.execute("SHOW primary_conninfo").fetchone()[0])  # type: ignore[index]
            assert conn.execute(MY_SSL).fetchone() == (True, "TLSv1.3")  # the replica's own DSN is verify-full
        assert conninfo["sslmode"] == "verify-full" and conninfo["sslrootcert"] == ca
        assert conninfo["passfile"] == str(replica.walreceiver_passfile) and "password" not in conninfo
        assert conninfo["port"] == str(primary.port)
        # a replica refuses plain TCP as the primary does (it has the primary's pg_hba.conf)
        assert "no encryption" in _refused(replica.dsn, sslmode="disable")
    # both walsenders stream over TLS 1.3
    streaming = scalar(
        primary.dsn,
        "SELECT array_agg(r.application_name ORDER BY r.application_name) FROM pg_stat_replication r "
        "JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming' AND s.ssl AND s.version = 'TLSv1.3'",
    )
    assert streaming == sorted(r.spec.name for r in replicas)

    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tls_probe (id int PRIMARY KEY)")
        conn.execute("INSERT INTO tls_probe SELECT generate_series(1, 10)")
    for replica in replicas:
        wait_until(lambda r=replica: _count_or_none(r.dsn, "tls_probe") == 10, 30, f"{replica.spec.name} to replay")
    # the stack's read DSN (multi-host, TLS parameters) lands on a replica, over TLS
    read = stack.settings.pg.read_conninfo()
    assert conninfo_to_dict(read)["sslmode"] == "verify-full"
    with psycopg.connect(read) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert conn.execute(MY_SSL).fetchone() == (True, "TLSv1.3")


def _count_or_none(dsn: str, table: str) -> int | None:
    try:
        return int(scalar(dsn, f"SELECT count(*) FROM {table}"))  # constant test table
    except psycopg.errors.UndefinedTable:
        return None


@pytest.fixture
def bouncer(stack: PrivateCluster) -> Iterator[LocalPgBouncer]:
    # not tmp_path: PgBouncer runs as the postgres OS user, who cannot enter pytest's 0700 dirs
    root = Path(tempfile.mkdtemp(prefix="insights-pgbouncer-"))
    root.chmod(0o755)
    primary = stack.refresh().primary
    pgb = LocalPgBouncer(stack.settings, root=root, port=free_ports(1), target=PgBouncerTarget("127.0.0.1", primary.port))
    try:
        assert pgb.up() == "started"
        yield pgb
    finally:
        pgb.down()
        shutil.rmtree(root, ignore_errors=True)


def test_pgbouncer_on_a_tls_stack_is_tls_and_scram_on_both_sides(stack: PrivateCluster, bouncer: LocalPgBouncer) -> None:
    assert bouncer.tls
    dsn = bouncer.dsn("insights")
    with psycopg.connect(dsn, prepare_threshold=None) as conn:
        assert conn.pgconn.ssl_in_use  # client to PgBouncer: TLS, certificate checked (verify-full)
        # PgBouncer to PostgreSQL: the server backend it uses sees a TLS 1.3 session
        assert conn.execute(MY_SSL).fetchone() == (True, "TLSv1.3")
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0  # type: ignore[index]
    assert "SSL required" in _refused(dsn, sslmode="disable")
    plain = make_conninfo(dsn, passfile="/dev/null")
    assert "SASL authentication failed" in _refused(plain, password="not-the-password")  # PgBouncer's words

    # the auth file holds SCRAM secrets, 0600, no clear-text password anywhere in PgBouncer's files
    userlist = bouncer.root / "userlist.txt"
    assert stat.S_IMODE(os.stat(userlist).st_mode) == 0o600
    text = userlist.read_text()
    assert '"insights" "SCRAM-SHA-256$' in text and "insights_ingest" not in text  # no password yet: left out
    superuser_password = tls.read_passfile(tls.stack_passfile(stack.root))["insights"]
    for path in bouncer.root.rglob("*"):
        if path.is_file():
            assert superuser_password not in path.read_text(errors="replace"), path

    # a service role given a password afterwards is let in once `up` refreshes the auth file
    done = stack.cli("db", "passwords", "--generate")
    assert done.returncode == 0, done.stderr
    assert bouncer.up() == "already running (auth file reloaded)"
    ingest = make_conninfo(dsn, user="insights_ingest")
    wait_until(lambda: _logs_in(ingest), 10, "insights_ingest to log in through PgBouncer")
    with psycopg.connect(ingest, prepare_threshold=None) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("insights_ingest",)
    # the stack's passfile serves every server of the stack: the role also reaches a replica
    replica = stack.refresh().replicas()[0]
    with psycopg.connect(make_conninfo(replica.dsn, user="insights_ingest")) as conn:
        assert conn.execute("SELECT current_user, pg_is_in_recovery()").fetchone() == ("insights_ingest", True)


def _logs_in(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=5, prepare_threshold=None).close()
    except psycopg.OperationalError:
        return False
    return True


def test_backup_check_and_restore_on_a_tls_cluster(stack: PrivateCluster) -> None:
    primary = stack.refresh().primary
    full = stack.cli("backup", "full", timeout=300)
    assert full.returncode == 0, full.stderr + full.stdout
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tls_pitr (id int PRIMARY KEY)")
        conn.execute("INSERT INTO tls_pitr SELECT generate_series(1, 40)")
        time.sleep(0.5)
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.5)
        conn.execute("INSERT INTO tls_pitr SELECT generate_series(41, 60)")
    check = stack.cli("backup", "check")
    assert check.returncode == 0, check.stderr + check.stdout

    into, port = stack.root / "restored-tls", free_ports(1)
    restored = stack.cli(
        "backup", "restore", "--to-time", target.isoformat(), "--into", str(into), "--port", str(port), timeout=300
    )
    assert restored.returncode == 0, restored.stderr + restored.stdout
    copy = LocalPostgres(stack.settings, root=into, port=port)
    try:
        # the copy has the primary's pg_hba.conf and certificate: the stack's DSN parameters reach it
        dsn = copy.dsn
        assert conninfo_to_dict(dsn)["sslmode"] == "verify-full"
        assert f"connect: {dsn}" in restored.stdout
        assert scalar(dsn, "SELECT count(*) FROM tls_pitr") == 40
        assert scalar(dsn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        assert "no encryption" in _refused(dsn, sslmode="disable")
    finally:
        copy.down("immediate")


def test_failover_on_a_tls_cluster_repoints_the_replica_pgbouncer_and_clones_a_new_one(stack: PrivateCluster) -> None:
    cluster = stack.refresh()
    old, (first, second) = cluster.primary, cluster.replicas()
    # the stack's own PgBouncer (`stack up --with-pgbouncer`), on a free port
    stack.settings = stack.settings.replace(stack_pgbouncer_port=free_ports(1))
    bouncer = LocalPgBouncer(stack.settings, target=PgBouncerTarget("127.0.0.1", old.port))
    try:
        assert bouncer.up() == "started"
        _failover_and_check(stack, old, first, second, bouncer)
    finally:
        bouncer.down()


def _failover_and_check(  # type: ignore[no-untyped-def]
    stack: PrivateCluster, old: LocalPostgres, first, second, bouncer: LocalPgBouncer
) -> None:
    done = stack.cli("stack", "failover", "--to", first.spec.name, "--yes", timeout=180)
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"pgbouncer: now routes to port {first.port}" in " ".join(done.stdout.split())
    assert not old.paths.root.exists()  # pg/ retired ...
    assert (tls.stack_ca_dir(stack.root) / "ca.crt").exists()  # ... the stack's CA and passfile stay
    assert tls.stack_passfile(stack.root).exists()
    printed = next(line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("INSIGHTS_PG_DSN="))
    assert conninfo_to_dict(printed)["sslmode"] == "verify-full"

    new = stack.refresh().primary
    assert new.port == first.port
    # the promoted node takes writes through the printed (multi-host, TLS) DSN
    with psycopg.connect(printed, autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone() == (first.port, False)
        assert conn.execute(MY_SSL).fetchone() == (True, "TLSv1.3")
        conn.execute("CREATE TABLE after_failover (id int)")
        conn.execute("INSERT INTO after_failover VALUES (1), (2)")
    # the other replica follows it, over TLS, with the same kind of conninfo
    with psycopg.connect(second.admin_dsn, autocommit=True) as conn:
        conninfo = conninfo_to_dict(conn.execute("SHOW primary_conninfo").fetchone()[0])  # type: ignore[index]
    assert conninfo["port"] == str(new.port) and conninfo["sslmode"] == "verify-full"
    assert conninfo["passfile"] == str(second.walreceiver_passfile)
    wait_until(lambda: _count_or_none(second.dsn, "after_failover") == 2, 60, "the repointed replica to replay")
    assert scalar(
        new.dsn, "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = %s",
        second.spec.name,
    ) is True

    # PgBouncer followed: through it, the new primary, over TLS on both sides
    with psycopg.connect(bouncer.dsn("insights"), prepare_threshold=None) as conn:
        assert conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone() == (first.port, False)
        assert conn.execute(MY_SSL).fetchone() == (True, "TLSv1.3")

    # a new replica is cloned from the new primary over TLS (pg_basebackup with verify-full)
    result = stack.refresh().up(2)
    assert any("hot standby" in what for what in result.values()), result
    third = [r for r in stack.refresh().replicas() if r.spec.name not in (first.spec.name, second.spec.name)][0]
    wait_until(lambda: _count_or_none(third.dsn, "after_failover") == 2, 60, "the new replica to answer")
    with psycopg.connect(third.admin_dsn, autocommit=True) as conn:
        assert conninfo_to_dict(conn.execute("SHOW primary_conninfo").fetchone()[0])["port"] == str(new.port)  # type: ignore[index]
