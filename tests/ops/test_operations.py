"""Replicas, read routing, replay lag in status, point-in-time recovery and pg_cron jobs.

One private cluster for the module (a primary archiving through pgBackRest and two
streaming replicas made by ``insights/stack/replicas.py``), driven through the real
``insights`` commands where an operator would type them. The tests run in file order: the
first installs the pg_cron jobs, the last waits for one of them to have run (pg_cron 1.4
schedules by the minute: its "N seconds" form arrived in 1.5), so the wait overlaps the
tests in between.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from insights.ops.health import backups, replicas, scheduled_jobs
from insights.stack.postgres import LocalPostgres
from tests.ops.conftest import PrivateCluster, free_ports, scalar, wait_until

pytestmark = pytest.mark.integration

EVERY_MINUTE_JOB = "insights-partitions"
_state: dict[str, Any] = {}


@pytest.fixture(scope="module")
def ops(make_cluster) -> PrivateCluster:  # type: ignore[no-untyped-def]
    return make_cluster(2, archive=True)


def test_db_schedule_installs_the_jobs_in_pg_cron(ops: PrivateCluster) -> None:
    done = ops.cli("db", "schedule", "--at", f"{EVERY_MINUTE_JOB}=* * * * *")
    assert done.returncode == 0, done.stderr + done.stdout
    _state["scheduled_at"] = time.monotonic()
    primary = ops.refresh().primary
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        jobs = dict(conn.execute("SELECT jobname, schedule FROM cron.job WHERE jobname LIKE 'insights-%%'", ()).fetchall())
        nodes = set(conn.execute("SELECT nodename, nodeport FROM cron.job").fetchall())
    assert len(jobs) == 7 and jobs[EVERY_MINUTE_JOB] == "* * * * *" and jobs["insights-retention"] == "23 2 * * *"
    # the jobs dial this node's own socket and port (they are moved on failover)
    assert nodes == {(str(primary.paths.socket_dir), primary.port)}
    from insights.ops.schedule import install

    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        install(conn, {EVERY_MINUTE_JOB: "* * * * *"})  # again: upserted by name, not duplicated
    assert scalar(primary.dsn, "SELECT count(*) FROM cron.job WHERE jobname LIKE 'insights-%'") == 7


def test_read_routing_lands_on_a_replica_and_on_the_primary_when_none_answers(ops: PrivateCluster) -> None:
    cluster = ops.refresh()
    replica_ports = {r.port for r in cluster.replicas()}
    pg = ops.settings.pg
    assert pg.read_dsn is not None and "prefer-standby" in pg.read_dsn

    def where(conninfo: str) -> tuple[bool, int]:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone()
        assert row is not None
        return bool(row[0]), int(row[1])

    for _ in range(4):  # load_balance_hosts=random: every pick is a replica
        in_recovery, port = where(pg.read_conninfo())
        assert in_recovery and port in replica_ports
    # writers: the same nodes, read-write finds the primary whichever answers first
    assert where(pg.conninfo()) == (False, cluster.primary.port)
    stats = ops.cli("db", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "from the replica on port" in stats.stdout

    cluster.down()  # both replicas stopped
    try:
        assert where(pg.read_conninfo()) == (False, cluster.primary.port)
    finally:
        cluster.up(None)
    wait_until(lambda: where(pg.read_conninfo())[0], 30, "a replica to answer again")


def test_status_shows_each_replicas_replay_lag_against_the_thresholds(ops: PrivateCluster) -> None:
    cluster = ops.refresh()
    primary, (first, second) = cluster.primary, cluster.replicas()
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE lag_probe (id bigint PRIMARY KEY, body text)")
    wait_until(lambda: all(r.lag_bytes == 0 for r in _lags(ops)), 30, "both replicas to catch up")
    rows = replicas(ops.settings)
    assert [r.what for r in rows] == [first.spec.name, second.spec.name]
    assert all(r.healthy and r.state == "streaming" and "replay lag 0 B" in r.detail for r in rows), rows

    # replay paused on the second replica: it still receives, it does not apply
    with psycopg.connect(second.admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO lag_probe SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        strict = ops.settings.replace(pg_replica_lag_max_bytes=1024 * 1024, pg_replica_lag_max_s=3600)
        found = wait_until(
            lambda: [r for r in replicas(strict) if r.what == second.spec.name and not r.healthy],
            20, "the paused replica to be flagged",
        )
        assert found[0].state == "LAGGING" and "replica-lagging" in found[0].detail
        behind = [r for r in _lags(ops) if r.name == second.spec.name][0]
        assert behind.lag_bytes is not None and behind.lag_bytes > 1024 * 1024
        # the other one keeps up: it replays the same 5 MB, so it may be a moment behind
        # when the paused one is first flagged, but it catches up while the paused one stays
        first_row = wait_until(
            lambda: [r for r in replicas(strict) if r.what == first.spec.name and r.healthy],
            20, "the running replica to be within the strict limits",
        )[0]
        assert first_row.healthy, first_row
        still = [r for r in replicas(strict) if r.what == second.spec.name][0]
        assert not still.healthy and still.state == "LAGGING", still
    finally:
        with psycopg.connect(second.admin_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
    wait_until(lambda: all(r.healthy for r in replicas(ops.settings)), 30, "the replica to catch up")


def _lags(ops: PrivateCluster) -> list[Any]:
    from insights.ops.health import replica_lag

    with psycopg.connect(ops.refresh().primary.dsn, autocommit=True) as conn:
        return replica_lag(conn)


def test_restore_to_a_time_holds_exactly_the_rows_committed_before_it(ops: PrivateCluster) -> None:
    primary = ops.refresh().primary
    full = ops.cli("backup", "full", timeout=300)
    assert full.returncode == 0, full.stderr + full.stdout
    assert "full backup" in full.stdout
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pitr_probe (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        conn.execute("INSERT INTO pitr_probe (id) SELECT generate_series(1, 100)")
        time.sleep(0.5)
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.5)
        conn.execute("INSERT INTO pitr_probe (id) SELECT generate_series(101, 250)")
        conn.execute("UPDATE pitr_probe SET at = clock_timestamp() WHERE id <= 10")  # after T too
    # archives a fresh segment (with the commits after T) and checks the newest backup's age
    check = ops.cli("backup", "check")
    assert check.returncode == 0, check.stderr + check.stdout

    into = ops.root / "restored"
    port = free_ports(1)
    restored = ops.cli(
        "backup", "restore", "--to-time", target.isoformat(), "--into", str(into), "--port", str(port), timeout=300
    )
    assert restored.returncode == 0, restored.stderr + restored.stdout
    copy = LocalPostgres(ops.settings, root=into, port=port)
    try:
        flat = " ".join(restored.stdout.split())
        assert "pitr_probe" in flat and f"running on port {port}" in flat
        dsn = copy.dsn  # on a TLS cluster: verify-full with the stack's CA and passfile
        assert f"connect: {dsn}" in restored.stdout
        assert scalar(dsn, "SELECT pg_is_in_recovery()") is False  # promoted at the target
        assert scalar(dsn, "SELECT count(*) FROM pitr_probe") == 100
        assert scalar(dsn, "SELECT max(id) FROM pitr_probe") == 100
        assert scalar(dsn, "SELECT max(at) FROM pitr_probe") < target  # the update after T is not there
        # the copy neither archives into the production stanza nor runs the cron jobs
        assert scalar(dsn, "SHOW archive_mode") == "off"
        assert "pg_cron" not in scalar(dsn, "SHOW shared_preload_libraries")
        # and the primary went on untouched
        assert scalar(primary.dsn, "SELECT count(*) FROM pitr_probe") == 250
    finally:
        copy.down("immediate")
    rows = backups(ops.settings)
    assert [r.state for r in rows] == ["ok", "ok"], rows


def test_a_scheduled_job_runs_and_status_shows_its_outcome(ops: PrivateCluster) -> None:
    primary = ops.refresh().primary
    scheduled = _state.get("scheduled_at")
    assert scheduled is not None, "the schedule test must run first"
    query = (
        "SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid) "
        "WHERE j.jobname = %s ORDER BY d.runid DESC LIMIT 1"
    )
    # pg_cron starts a '* * * * *' job at the next minute boundary
    outcome = wait_until(
        lambda: scalar(primary.dsn, query, EVERY_MINUTE_JOB) in ("succeeded", "failed") and scalar(
            primary.dsn, query, EVERY_MINUTE_JOB),
        max(5.0, 80 - (time.monotonic() - scheduled)), "the every-minute job to run", interval=1.0,
    )
    assert outcome == "succeeded", scalar(
        primary.dsn,
        "SELECT return_message FROM cron.job_run_details ORDER BY runid DESC LIMIT 1",
    )
    rows = {r.what: r for r in scheduled_jobs(ops.settings)}
    assert rows[EVERY_MINUTE_JOB].state == "succeeded" and rows[EVERY_MINUTE_JOB].healthy
    assert rows["insights-retention"].state == "not run yet"
    status = ops.cli("status", "--json", timeout=120)
    checks = json.loads(status.stdout)["checks"]
    found = [r for r in checks if r["area"] == "schedule" and r["name"] == EVERY_MINUTE_JOB]
    assert found and found[0]["state"] == "ok", found
    assert "* * * * *: last succeeded" in found[0]["reason"] and found[0]["metrics"]["last_status"] == "succeeded"
    replica_rows = [r for r in checks if r["area"] == "replicas"]
    assert len(replica_rows) == 2 and all("replay lag" in r["reason"] for r in replica_rows), replica_rows
    assert all(r["state"] == "ok" and r["metrics"]["connected"] for r in replica_rows)
    backup_rows = [r for r in checks if r["area"] == "backups"]
    assert [r["state"] for r in backup_rows] == ["ok", "ok"], backup_rows
