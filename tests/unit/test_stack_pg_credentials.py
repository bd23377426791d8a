"""Where a TLS stack keeps its CA and passfile, and the DSNs that name them (no server needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from core.settings import load_settings
from insights.db import passfile
from insights.stack import tls
from insights.stack.pgbouncer import LocalPgBouncer
from insights.stack.postgres import LocalPostgres
from insights.stack.replicas import Cluster, NodeSpec, Topology


def _tls_files(stack: Path, *, legacy: bool = False) -> None:
    tls_dir = stack / "pg" / "tls" if legacy else stack / "tls"
    tls_dir.mkdir(parents=True)
    (tls_dir / "ca.crt").write_text("not a real certificate")
    tls.write_passfile(stack / "pg" / "passfile" if legacy else stack / "pgpass", {"insights": "pw"})


def test_the_ca_and_passfile_live_at_the_top_of_the_stack_dir_where_a_failover_leaves_them(tmp_path: Path) -> None:
    assert tls.stack_ca_dir(tmp_path) == tmp_path / "tls"
    assert tls.stack_passfile(tmp_path) == tmp_path / "pgpass"
    # a TLS stack made before they moved keeps its files under pg/
    _tls_files(tmp_path, legacy=True)
    assert tls.stack_ca_dir(tmp_path) == tmp_path / "pg" / "tls"
    assert tls.stack_passfile(tmp_path) == tmp_path / "pg" / "passfile"


def test_the_stack_passfile_serves_any_loopback_port_and_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    passfile.write(path, [passfile.Entry("db.example", "5432", "*", "app", "other")])
    tls.write_passfile(path, {"insights": "s3cret"})
    entries = passfile.read(path)
    for host in ("127.0.0.1", "localhost"):
        for port in ("55432", "55433", "56432"):  # primary, a replica, PgBouncer
            assert passfile.lookup(entries, host, port, "insights", "insights") == "s3cret"
    assert passfile.lookup(entries, "db.example", "5432", "x", "app") == "other"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_dsns_of_a_tls_stack_carry_verify_full_the_ca_and_the_passfile(tmp_path: Path) -> None:
    stack = tmp_path / "my stack"  # a space in the path survives the URI
    settings = load_settings(stack_dir=stack, stack_pg_port=5999, stack_pg_replica_base_port=6001)
    assert LocalPostgres(settings).dsn == "postgresql://insights@127.0.0.1:5999/insights"  # plain: nothing added
    _tls_files(stack)
    Topology(NodeSpec("pg", 5999), [NodeSpec("replica-1", 6001)]).save(settings)
    cluster = Cluster(settings)
    expected = {"sslmode": "verify-full", "sslrootcert": str(stack / "tls" / "ca.crt"), "passfile": str(stack / "pgpass")}
    replica = cluster.replicas()[0]
    for dsn in (cluster.primary.dsn, replica.dsn, replica.admin_dsn, cluster.write_dsn(), cluster.read_dsn()):
        assert dsn is not None
        parts = conninfo_to_dict(dsn)
        assert {k: parts[k] for k in expected} == expected, dsn
        assert "password" not in parts
    assert conninfo_to_dict(cluster.write_dsn())["target_session_attrs"] == "read-write"
    # the walreceiver's conninfo names the replica's own passfile, not the stack's
    walreceiver = conninfo_to_dict(replica.primary_conninfo(cluster.primary))
    assert walreceiver["passfile"] == str(stack / "replica-1" / "walreceiver.pgpass")
    assert walreceiver["sslmode"] == "verify-full" and walreceiver["port"] == "5999"
    # PgBouncer's DSN: the same parameters on its own port
    bouncer = conninfo_to_dict(LocalPgBouncer(settings, port=6432).dsn("insights"))
    assert bouncer["port"] == "6432" and {k: bouncer[k] for k in expected} == expected


def test_pgbouncer_on_a_plain_stack_keeps_trust_and_no_tls(tmp_path: Path) -> None:
    settings = load_settings(stack_dir=tmp_path, stack_pg_port=5999)
    bouncer = LocalPgBouncer(settings, port=6432)
    config = bouncer.write_config().read_text()
    assert "auth_type = trust" in config and "tls" not in config
    assert (tmp_path / "pgbouncer" / "userlist.txt").read_text().startswith('"insights" ""\n')
    assert stat.S_IMODE(os.stat(tmp_path / "pgbouncer" / "userlist.txt").st_mode) == 0o600


def test_a_new_stack_is_tls_unless_opted_out(monkeypatch) -> None:
    monkeypatch.delenv("INSIGHTS_STACK_PG_TLS", raising=False)
    assert load_settings().stack.pg_tls is True
    monkeypatch.setenv("INSIGHTS_STACK_PG_TLS", "false")
    assert load_settings().stack.pg_tls is False


def test_an_existing_plain_stack_stays_plain_whatever_the_default(tmp_path: Path) -> None:
    # TLS or not is the stack's files, not the setting: a plain .stack/ keeps plain DSNs
    settings = load_settings(stack_dir=tmp_path, stack_pg_port=5999, stack_pg_tls=True)
    assert not LocalPostgres(settings).tls
    assert LocalPostgres(settings).dsn_for("other", user="role") == "postgresql://role@127.0.0.1:5999/other"


def test_dsn_for_another_database_or_role_keeps_the_tls_parameters(tmp_path: Path) -> None:
    _tls_files(tmp_path)
    server = LocalPostgres(load_settings(stack_dir=tmp_path, stack_pg_port=5999))
    parts = conninfo_to_dict(server.dsn_for("test_db", user="stranger"))
    assert (parts["user"], parts["dbname"], parts["port"]) == ("stranger", "test_db", "5999")
    assert parts["sslmode"] == "verify-full" and parts["passfile"] == str(tmp_path / "pgpass")
    assert parts["sslrootcert"] == str(tmp_path / "tls" / "ca.crt")
    assert server.dsn == server.dsn_for("insights") and server.admin_dsn == server.dsn_for("postgres")
