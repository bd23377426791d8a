"""Pure parts of the operations code: DSN defaults, job periods, units, topology, messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from core.errors import ConfigError
from core.settings import load_settings
from insights.ops.schedule import JOBS, JobRun, schedule_period, systemd_units
from insights.stack.replicas import NodeSpec, Topology
from streams.cdc.errors import SlotMissingError

MULTI = "postgresql://insights@127.0.0.1:5001,127.0.0.1:5002/insights"


def test_a_multi_host_write_dsn_gets_read_write_and_the_read_dsn_prefer_standby() -> None:
    settings = load_settings(pg_dsn=MULTI, pg_read_dsn=MULTI, pg_password="s3cret")
    write = conninfo_to_dict(settings.pg.conninfo())
    read = conninfo_to_dict(settings.pg.read_conninfo())
    assert write["target_session_attrs"] == "read-write" and write["password"] == "s3cret"
    assert read["target_session_attrs"] == "prefer-standby" and read["password"] == "s3cret"
    # an explicit choice is kept; one host gets nothing added
    explicit = load_settings(pg_dsn=MULTI + "?target_session_attrs=primary")
    assert conninfo_to_dict(explicit.pg.conninfo())["target_session_attrs"] == "primary"
    single = load_settings(pg_dsn="postgresql://insights@127.0.0.1:5001/insights")
    assert "target_session_attrs" not in conninfo_to_dict(single.pg.conninfo())
    # no read DSN: reads go where writes go
    assert single.pg.read_conninfo() == single.pg.conninfo()


def test_a_read_dsn_with_a_password_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="INSIGHTS_PG_READ_DSN"):
        load_settings(pg_read_dsn="postgresql://insights:pw@127.0.0.1:5001/insights")


def test_schedule_periods_and_overdue_jobs() -> None:
    assert schedule_period("* * * * *") == timedelta(minutes=1)
    assert schedule_period("*/15 * * * *") == timedelta(minutes=15)
    assert schedule_period("7 * * * *") == timedelta(hours=1)
    assert schedule_period("23 2 * * *") == timedelta(days=1)
    assert schedule_period("0 3 * * 0") is None  # weekly: not judged
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    on_time = JobRun("j", "*/15 * * * *", True, now - timedelta(minutes=20), None, "succeeded", None, 0)
    late = JobRun("j", "*/15 * * * *", True, now - timedelta(minutes=31), None, "succeeded", None, 0)
    assert on_time.overdue(now) is None
    assert late.overdue(now) == timedelta(minutes=1)
    assert all(schedule_period(job.schedule) is not None for job in JOBS)  # every job can be judged


def test_systemd_units_cover_what_pg_cron_cannot_run() -> None:
    with_cron = systemd_units("/opt/insights/bin/insights", with_cron=True)
    assert "insights-summaries-sweep.timer" in with_cron and "insights-backup-incr.service" in with_cron
    assert "insights-maintain.timer" not in with_cron
    assert "ExecStart=/opt/insights/bin/insights summaries sweep" in with_cron["insights-summaries-sweep.service"]
    assert "Persistent=true" in with_cron["insights-backup-full.timer"]
    without = systemd_units("insights", with_cron=False)
    assert {"insights-maintain.timer", "insights-retention.timer", "insights-partitions.timer"} <= set(without)
    # no terminal under systemd: without --yes prune would refuse whenever a partition is due;
    # the rows go to an archive before the partition is dropped
    assert "ExecStart=insights db partitions prune --yes --archive /var/lib/insights/archive" in without[
        "insights-retention.service"]
    # db maintain prunes as well: it archives to the same place, never drops un-archived
    assert "ExecStart=insights db maintain --archive /var/lib/insights/archive" in without["insights-maintain.service"]


def test_topology_round_trips_and_defaults_to_the_single_primary(tmp_path: Path) -> None:
    settings = load_settings(stack_dir=tmp_path, stack_pg_port=5999)
    assert Topology.load(settings) == Topology(NodeSpec("pg", 5999))
    topology = Topology(NodeSpec("replica-1", 6001), [NodeSpec("replica-2", 6002)], [{"name": "pg", "port": "5999"}])
    topology.save(settings)
    assert Topology.load(settings) == topology
    assert NodeSpec("replica-2", 1).slot == "replica_2"


def test_slot_missing_says_what_happened_and_what_to_run() -> None:
    text = str(SlotMissingError("insights_cdc", "insights_cdc", timeline=2))
    assert "does not exist but publication 'insights_cdc' does" in text
    assert "timeline 2" in text and "insights cdc resync" in text and "docs/runbooks.md#primary-lost" in text
    assert SlotMissingError("s", "p").exit_code == 3


def test_with_an_archive_dir_the_retention_is_a_timer_even_with_pg_cron(tmp_path: Path) -> None:
    from insights.ops.schedule import RETENTION, cron_jobs

    archive = tmp_path / "archive"
    assert RETENTION in {j.name for j in cron_jobs(None)}
    assert RETENTION not in {j.name for j in cron_jobs(archive)} and len(cron_jobs(archive)) == len(JOBS) - 1
    units = systemd_units("/opt/insights/bin/insights", with_cron=True, archive_dir=archive)
    assert f"ExecStart=/opt/insights/bin/insights db partitions prune --yes --archive {archive}" in units[
        "insights-retention.service"]
    assert "insights-maintain.timer" not in units  # the rest of db maintain stays in pg_cron
    without = systemd_units("insights", with_cron=False, archive_dir=archive)
    assert f"--archive {archive}" in without["insights-retention.service"]


def test_the_pg_cron_retention_binds_every_placeholder_of_the_prune_query() -> None:
    from insights.ops.schedule import JOBS as jobs

    command = next(j.command for j in jobs if j.name == "insights-retention")
    assert "%(" not in command and "now()" in command and "retention_runs" in command


def test_retention_finding_warns_when_the_archiving_retention_is_late_failed_or_never_ran(tmp_path: Path) -> None:
    from insights.db.retention import LastRun
    from insights.ops.health import retention_finding

    now = datetime(2026, 12, 2, 6, tzinfo=UTC)
    archive = tmp_path / "archive"

    def run(age_h: float, outcome: str = "succeeded") -> LastRun:
        start = now - timedelta(hours=age_h)
        return LastRun("prune", start, None if outcome == "running" else start + timedelta(seconds=3), outcome,
                       str(archive), 2, 2 if outcome == "succeeded" else 0, 500, "boom" if outcome == "failed" else None,
                       start if outcome == "succeeded" else None)

    assert retention_finding(None, archive_dir=None, now=now, cron_drops=True) is None  # pg_cron's row watches it
    never = retention_finding(None, archive_dir=archive, now=now, cron_drops=False)
    assert never is not None and never.level == "warn" and never.state == "never run"
    fresh = retention_finding(run(3), archive_dir=archive, now=now, cron_drops=False)
    assert fresh is not None and fresh.healthy and "archived 500 row(s)" in fresh.detail
    late = retention_finding(run(26), archive_dir=archive, now=now, cron_drops=False)
    assert late is not None and late.level == "warn" and late.state == "STOPPED"
    stuck = retention_finding(run(30, "running"), archive_dir=archive, now=now, cron_drops=False)
    assert stuck is not None and stuck.state == "STUCK"
    failed = retention_finding(run(1, "failed"), archive_dir=archive, now=now, cron_drops=False)
    assert failed is not None and failed.level == "warn" and "boom" in failed.detail
    unarchived = retention_finding(run(1), archive_dir=archive, now=now, cron_drops=True)
    assert unarchived is not None and unarchived.state == "NOT ARCHIVED"
    # without the setting only what the last run did, never a lateness warning
    old = retention_finding(run(100), archive_dir=None, now=now, cron_drops=False)
    assert old is not None and old.healthy and old.what == "retention_runs"
