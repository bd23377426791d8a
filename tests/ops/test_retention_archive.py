"""Retention with archive under pg_cron (issue 14, item 5), on a private primary with pg_cron.

Without ``INSIGHTS_PG_RETENTION_ARCHIVE_DIR``: the old behaviour, pg_cron's SQL job drops
due partitions (and records its run). With it: no SQL drop job exists, the systemd timer's
command archives then drops, the archive verifies and restores the rows, and ``insights
status`` shows the run beside the pg_cron jobs (and warns when none ran within its period).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from insights.ops.health import scheduled_jobs
from tests.ops.conftest import INSIGHTS, PrivateCluster, scalar
from tests.fix_services import child_env

pytestmark = pytest.mark.integration

ROWS = 37


@pytest.fixture(scope="module")
def ops(make_cluster) -> PrivateCluster:  # type: ignore[no-untyped-def]
    return make_cluster(0)


def _due_partition(dsn: str, at: datetime, rows: int) -> str:
    """A product_snapshots partition wholly past its 12 months' retention, holding ``rows`` rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT ensure_partitions('product_snapshots'::regclass, ARRAY[%s::timestamptz])", (at,))
        conn.execute("INSERT INTO products (asin, title) VALUES ('B0RETAIN01', 'retention probe') "
                     "ON CONFLICT DO NOTHING")
        conn.execute(
            "INSERT INTO product_snapshots (asin, scraped_at, price, title) "
            "SELECT 'B0RETAIN01', %s::timestamptz + g * interval '1 minute', g, 'row ' || g "
            "FROM generate_series(1, %s) g", (at, rows),
        )
        row = conn.execute(
            "SELECT tableoid::regclass::text FROM product_snapshots WHERE scraped_at = %s + interval '1 minute'",
            (at,),
        ).fetchone()
    assert row is not None and "default" not in row[0], row
    return str(row[0])


def _exists(dsn: str, relation: str) -> bool:
    return scalar(dsn, "SELECT to_regclass(%s) IS NOT NULL", relation)


def _jobs(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT jobname, command FROM cron.job WHERE jobname LIKE 'insights-%%'", ()).fetchall())


def test_without_an_archive_dir_pg_cron_drops_in_sql_and_records_the_run(ops: PrivateCluster) -> None:
    dsn = ops.primary_dsn
    done = ops.cli("db", "schedule")
    assert done.returncode == 0, done.stderr + done.stdout
    jobs = _jobs(dsn)
    assert len(jobs) == 7 and "DETACH PARTITION" in jobs["insights-retention"]
    part = _due_partition(dsn, datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                          - timedelta(days=800), 5)
    # what pg_cron runs at 02:23, run now: one simple query
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(jobs["insights-retention"].encode())
    assert not _exists(dsn, part)
    row = scalar(dsn, "SELECT row(runner, outcome, partitions_dropped, rows_archived, archive_dir IS NULL)::text "
                      "FROM retention_runs ORDER BY id DESC LIMIT 1")
    assert row == "(pg_cron,succeeded,1,0,t)"


def test_with_an_archive_dir_the_timer_archives_then_drops_and_status_shows_the_run(ops: PrivateCluster) -> None:
    dsn = ops.primary_dsn
    archive = ops.root / "retention-archive"
    units_dir = ops.root / "units"
    ops.settings = ops.settings.replace(pg_retention_archive_dir=str(archive))

    done = ops.cli("db", "schedule")
    assert done.returncode == 0, done.stderr + done.stdout
    flat = " ".join(done.stdout.split())
    assert f"insights db partitions prune --yes --archive {archive}" in flat and "not in pg_cron" in flat
    jobs = _jobs(dsn)
    # the SQL drop job installed before is gone; no job drops a partition
    assert len(jobs) == 6 and "insights-retention" not in jobs, sorted(jobs)
    assert not [name for name, command in jobs.items() if "DROP" in command.upper()]
    refused = ops.cli("db", "schedule", "--at", "insights-retention=* * * * *")
    assert refused.returncode != 0 and "systemd timer" in refused.stdout + refused.stderr

    units = ops.cli("db", "schedule", "--systemd", str(units_dir))
    assert units.returncode == 0, units.stderr + units.stdout
    service = (units_dir / "insights-retention.service").read_text()
    assert (units_dir / "insights-retention.timer").exists()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))[len("ExecStart="):]
    argv = shlex.split(exec_start)
    assert argv[1:] == ["db", "partitions", "prune", "--yes", "--archive", str(archive)], argv

    at = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=800)
    part = _due_partition(dsn, at, ROWS)
    # the timer's command, as systemd runs it: no terminal, the settings from the env file
    ran = subprocess.run([INSIGHTS, *argv[1:]], env=child_env(ops.settings), capture_output=True, text=True,
                         timeout=180, stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert f"archived {ROWS} row(s) of {part}" in " ".join(ran.stdout.split())
    assert not _exists(dsn, part)
    assert scalar(dsn, "SELECT count(*) FROM product_snapshots WHERE asin = 'B0RETAIN01'") == 0
    last = scalar(dsn, "SELECT row(runner, outcome, partitions_due, partitions_dropped, rows_archived, archive_dir,"
                       " ended_at >= started_at)::text FROM retention_runs ORDER BY id DESC LIMIT 1")
    assert last == f"(prune,succeeded,1,1,{ROWS},{archive},t)"

    verified = ops.cli("archive", "verify", str(archive))
    assert verified.returncode == 0 and "all match the manifest" in verified.stdout, verified.stdout + verified.stderr

    rows = {f.what: f for f in scheduled_jobs(ops.settings)}
    found = rows["insights-retention"]
    assert found.healthy and found.state == "succeeded", found
    assert found.metrics["rows_archived"] == ROWS and found.metrics["partitions_dropped"] == 1
    status = ops.cli("status", "--json", timeout=120)
    checks = json.loads(status.stdout)["checks"]
    mine = [c for c in checks if c["area"] == "schedule" and c["name"] == "insights-retention"]
    assert len(mine) == 1 and mine[0]["state"] == "ok", mine
    assert f"prune succeeded" in mine[0]["reason"] and f"archived {ROWS} row(s) to {archive}" in mine[0]["reason"]
    # beside the pg_cron jobs
    assert len([c for c in checks if c["area"] == "schedule"]) == 7

    restored = ops.cli("archive", "restore", str(archive), "--table", "product_snapshots")
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert f"{ROWS} of {ROWS} archived row(s) inserted" in restored.stdout
    assert scalar(dsn, "SELECT count(*) FROM product_snapshots WHERE asin = 'B0RETAIN01'") == ROWS
    assert scalar(dsn, "SELECT sum(price) FROM product_snapshots WHERE asin = 'B0RETAIN01'") == ROWS * (ROWS + 1) / 2

    # a retention that has not run within its period (1 day) is a warning
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE retention_runs SET started_at = started_at - interval '2 days',"
                     " ended_at = ended_at - interval '2 days'")
    late = {f.what: f for f in scheduled_jobs(ops.settings)}["insights-retention"]
    assert late.level == "warn" and late.state == "STOPPED" and "a-job-stopped-running" in late.detail, late
    # and a run whose archive cannot be written drops nothing and says so
    blocked = ops.root / "not-a-dir"
    blocked.write_text("a file where the archive directory should be")
    failed = subprocess.run([INSIGHTS, "db", "partitions", "prune", "--yes", "--archive", str(blocked)],
                            env=child_env(ops.settings), capture_output=True, text=True, timeout=180,
                            stdin=subprocess.DEVNULL)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr
    assert _exists(dsn, part)
    assert scalar(dsn, "SELECT count(*) FROM product_snapshots WHERE asin = 'B0RETAIN01'") == ROWS
    assert scalar(dsn, "SELECT outcome FROM retention_runs ORDER BY id DESC LIMIT 1") == "failed"
    again = {f.what: f for f in scheduled_jobs(ops.settings)}["insights-retention"]
    assert again.state == "FAILED" and again.level == "warn", again
