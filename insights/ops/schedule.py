"""``insights db schedule``: the seed's scheduled maintenance as pg_cron jobs, or systemd timers.

The seed scheduled one plpgsql function through pg_cron that could not run (``VACUUM`` and
``REINDEX CONCURRENTLY`` refuse to run inside a function). pg_cron runs each job's command
as one simple query, i.e. one implicit transaction, so the maintenance is split into one job
per statement that may run there:

========================  ============  ==================================================
job                       schedule      what
========================  ============  ==================================================
insights-partitions       ``7 * * * *`` split DEFAULT partitions, create partitions ahead
insights-retention        ``23 2 * * *`` detach + drop partitions past retention (bounds);
                                        not in pg_cron when the retention archives (below)
insights-refresh-view     ``*/15 * * * *`` ``REFRESH MATERIALIZED VIEW CONCURRENTLY``
insights-vacuum-snapshots ``41 3 * * *`` ``VACUUM (ANALYZE) product_snapshots``
insights-vacuum-analyses  ``51 3 * * *`` ``VACUUM (ANALYZE) competitive_analyses``
insights-analyze-parents  ``11 4 * * *`` ``ANALYZE`` of partitioned parents (autovacuum never does)
insights-cron-history     ``31 4 * * *`` keep 14 days of ``cron.job_run_details`` (it grows forever)
========================  ============  ==================================================

``insights summaries sweep`` is Python (chunked transactions with advisory locks): it runs
as ``insights summaries sweep --every 60`` beside the consumer, or from the systemd timer
below. Off-the-hour minutes spread the jobs so they do not all start at :00.

The retention job takes the partitions to drop from the same query as ``insights db
partitions prune`` (``insights.db.partitions.PRUNABLE``) and drops them in one transaction
with a lock timeout: when a writer holds the parent, the run fails (and says so in
``cron.job_run_details``) and the next run tries again. The dropped rows stay recoverable for
the backup retention (30 days) through ``insights backup restore`` into a side cluster.

**Retention with archive** (the seed's item: rows kept beyond the tables' retention). A
pg_cron job is SQL inside the server: it cannot write the project's Avro archive
(``streams/archive.py``, files on the operator's side, fsynced before the drop). So when
``INSIGHTS_PG_RETENTION_ARCHIVE_DIR`` is set, ``db schedule`` does not install
``insights-retention`` in pg_cron (and removes one installed before), and the retention runs
as ``insights db partitions prune --yes --archive DIR`` from the systemd timer that ``db
schedule --systemd`` writes; ``db maintain`` archives to the same directory. No path drops a
partition un-archived: the archive is written before each DROP, and a failed export stops the
run. Why a setting and not a ``db schedule --archive-dir`` option: every runner (the timer,
``db maintain``, an operator's ``prune``) and ``status`` must agree on it, and what they share
is the settings (the units' ``EnvironmentFile``), not one command's line. Why a timer and not
a ``run-retention`` loop: it is once a day, a timer needs no process to keep alive and runs a
missed day at boot (``Persistent=true``). Every prune run, whoever runs it (pg_cron's job
included), is recorded in ``retention_runs`` (ddl/0025); ``status`` shows the last one beside
the pg_cron jobs and warns when none ran within :data:`RETENTION_PERIOD` (+ grace), since no
pg_cron history watches a timer.

pg_cron runs jobs only on the primary and its ``cron.job`` table is replicated: after a
failover the promoted replica runs the same jobs without reinstalling them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from core.errors import InsightsError
from insights.db.partitions import PRUNABLE

PREFIX = "insights-"


class ScheduleError(InsightsError):
    """pg_cron is not usable here, or a job could not be installed."""


@dataclass(frozen=True)
class Job:
    name: str
    schedule: str
    command: str


def _prunable_sql() -> str:
    """``PRUNABLE`` with its parameters bound as SQL: now, and no per-table what-if (its
    ``%(table)s``/``%(retention)s`` serve ``db partitions policy``). Every placeholder must go:
    one left behind is a syntax error in every nightly run (it was, until retention_runs
    showed it)."""
    text = PRUNABLE.replace("%(now)s", "now()").replace("%(table)s", "NULL").replace("%(retention)s", "NULL")
    if "%(" in text:
        raise ScheduleError(f"PRUNABLE has a placeholder the pg_cron job does not bind: {text}")
    return text.strip()


_RETENTION = (
    # the loop variable is not "r": PRUNABLE uses r as a table alias
    "DO $job$\nDECLARE victim record; dropped int := 0;\nBEGIN\n"
    "  SET LOCAL lock_timeout = '5s';\n"
    "  FOR victim IN SELECT x.* FROM (" + _prunable_sql() + ")\n"
    "      AS x(parent, part, lo, hi, pnsp, prel, nsp, rel) LOOP\n"
    "    EXECUTE format('ALTER TABLE %I.%I DETACH PARTITION %I.%I', victim.pnsp, victim.prel, victim.nsp, victim.rel);\n"
    "    EXECUTE format('DROP TABLE %I.%I', victim.nsp, victim.rel);\n"
    "    dropped := dropped + 1;\n"
    "  END LOOP;\n"
    # recorded like every prune run (ddl/0025), in the job's one transaction: a failed run
    # leaves no row here, pg_cron's cron.job_run_details says why
    "  IF to_regclass('public.retention_runs') IS NOT NULL THEN\n"
    "    INSERT INTO public.retention_runs (runner, started_at, ended_at, outcome, partitions_due, partitions_dropped)\n"
    "    VALUES ('pg_cron', now(), clock_timestamp(), 'succeeded', dropped, dropped);\n"
    "  END IF;\n"
    "END\n$job$"
)

JOBS: tuple[Job, ...] = (
    Job(
        "insights-partitions",
        "7 * * * *",
        "SELECT (SELECT count(*) FROM public.partition_policy p, LATERAL public.split_default_partition(p.parent))"
        " + (SELECT count(*) FROM public.partition_policy p, LATERAL public.premake_partitions(p.parent))",
    ),
    Job("insights-retention", "23 2 * * *", _RETENTION),
    Job(
        "insights-refresh-view",
        "*/15 * * * *",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY public.product_summary_view",
    ),
    Job("insights-vacuum-snapshots", "41 3 * * *", "VACUUM (ANALYZE) public.product_snapshots"),
    Job("insights-vacuum-analyses", "51 3 * * *", "VACUUM (ANALYZE) public.competitive_analyses"),
    Job(
        "insights-analyze-parents",
        "11 4 * * *",
        "DO $job$\nDECLARE parent record;\nBEGIN\n"
        "  FOR parent IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace\n"
        "           WHERE c.relkind = 'p' AND NOT c.relispartition AND n.nspname = 'public' LOOP\n"
        "    EXECUTE format('ANALYZE %I.%I', parent.nspname, parent.relname);\n"
        "  END LOOP;\nEND\n$job$",
    ),
    Job(
        "insights-cron-history",
        "31 4 * * *",
        "DELETE FROM cron.job_run_details WHERE end_time < now() - interval '14 days'",
    ),
)

#: systemd timers (unit name, OnCalendar=, command): what pg_cron cannot run, and the whole
#: schedule on a server without pg_cron (docs/runbooks.md#scheduled-maintenance)
OUTSIDE_JOBS: tuple[tuple[str, str, str], ...] = (
    ("insights-summaries-sweep", "*-*-* *:*:00", "insights summaries sweep"),
    ("insights-backup-full", "Sun *-*-* 01:00:00", "insights backup full"),
    ("insights-backup-diff", "Mon..Sat *-*-* 01:00:00", "insights backup diff"),
    ("insights-backup-incr", "*-*-* 05,09,13,17,21:00:00", "insights backup incr"),
)


@dataclass(frozen=True)
class CronState:
    """Whether pg_cron can be used from this connection's server and database."""

    loaded: bool  # in shared_preload_libraries
    available: bool  # the extension's files are installed
    database: str | None  # cron.database_name: where the extension (and cron.job) must live
    installed: bool  # CREATE EXTENSION done in that database


def cron_state(conn: psycopg.Connection[Any]) -> CronState:
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    loaded = bool(preload) and "pg_cron" in [p.strip() for p in str(preload[0]).split(",")]
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron'").fetchone() is not None
    database = None
    if loaded:
        row = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()
        database = row[0] if row and row[0] else "postgres"
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone() is not None
    return CronState(loaded, available, database, installed)


def _require_cron(conn: psycopg.Connection[Any]) -> CronState:
    state = cron_state(conn)
    if not state.available:
        raise ScheduleError(
            "pg_cron is not installed on this server: install Debian's postgresql-15-cron "
            "(`insights stack up` does) or use the systemd timers: `insights db schedule --systemd DIR`"
        )
    if not state.loaded:
        raise ScheduleError(
            "pg_cron is not in shared_preload_libraries (needs a restart to load): add it and "
            "cron.database_name, or use the systemd timers: `insights db schedule --systemd DIR`"
        )
    dbname = conn.info.dbname
    if state.database != dbname:
        raise ScheduleError(
            f"pg_cron keeps its jobs in database {state.database!r} (cron.database_name), not {dbname!r}: "
            f"connect there (INSIGHTS_PG_DSN with dbname={state.database}) or set cron.database_name"
        )
    return state


def cron_jobs(archive_dir: Path | None) -> tuple[Job, ...]:
    """The jobs pg_cron runs: all of :data:`JOBS`, but the SQL retention drop when the
    retention must archive first (it runs from the systemd timer, :data:`RETENTION_TIMER`)."""
    return tuple(j for j in JOBS if archive_dir is None or j.name != RETENTION)


def install(
    conn: psycopg.Connection[Any], overrides: dict[str, str] | None = None, *, dry_run: bool = False,
    archive_dir: Path | None = None,
) -> list[tuple[Job, str]]:
    """Create the extension and upsert every job (by name); remove ``insights-*`` jobs no longer
    declared. ``overrides`` replace schedules by job name (e.g. every minute in a test).
    ``archive_dir`` (INSIGHTS_PG_RETENTION_ARCHIVE_DIR): the SQL retention job is not installed
    (an installed one is removed), the retention is the systemd timer's archiving prune."""
    jobs = cron_jobs(archive_dir)
    overrides = dict(overrides or {})
    if archive_dir is not None and RETENTION in overrides:
        raise ScheduleError(
            f"{RETENTION} is not a pg_cron job when INSIGHTS_PG_RETENTION_ARCHIVE_DIR is set: it runs "
            f"from the systemd timer (`insights db schedule --systemd DIR`); change its OnCalendar= there"
        )
    unknown = sorted(set(overrides) - {j.name for j in jobs})
    if unknown:
        raise ScheduleError(f"unknown job(s) {', '.join(unknown)}: one of {', '.join(j.name for j in jobs)}")
    state = _require_cron(conn)
    done: list[tuple[Job, str]] = []
    if dry_run:
        return [(j, f"would schedule {overrides.get(j.name, j.schedule)}") for j in jobs]
    if not state.installed:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    dbname = conn.info.dbname
    for job in jobs:
        schedule = overrides.get(job.name, job.schedule)
        # schedule_in_database upserts by (name, user): re-running changes, never duplicates
        conn.execute(
            "SELECT cron.schedule_in_database(%s, %s, %s, %s)", (job.name, schedule, job.command, dbname)
        )
        done.append((job, f"scheduled {schedule}"))
    repoint_jobs(conn)
    declared = [j.name for j in jobs]
    for (name,) in conn.execute(
        "SELECT jobname FROM cron.job WHERE jobname LIKE %s AND NOT (jobname = ANY(%s))",
        (PREFIX + "%", declared),
    ).fetchall():
        conn.execute("SELECT cron.unschedule(%s)", (name,))
    return done


def repoint_jobs(conn: psycopg.Connection[Any]) -> int:
    """Make the jobs connect to this server.

    pg_cron stores, per job, the host and port it connects to when it runs the command
    (``cron.host`` and the server's port at schedule time). Where every node listens on
    the same host name and port that survives a failover; in the local stack each node has
    its own port and socket directory, so after a promotion the jobs would keep dialling
    the old primary. Run by ``db schedule`` and by ``stack failover``.
    """
    return conn.execute(
        "UPDATE cron.job SET nodename = coalesce(nullif(current_setting('cron.host', true), ''), 'localhost'),"
        " nodeport = current_setting('port')::int"
        " WHERE jobname LIKE %s AND (nodename, nodeport) IS DISTINCT FROM"
        " (coalesce(nullif(current_setting('cron.host', true), ''), 'localhost'), current_setting('port')::int)",
        (PREFIX + "%",),
    ).rowcount


@dataclass(frozen=True)
class JobRun:
    name: str
    schedule: str
    active: bool
    last_start: datetime | None
    last_end: datetime | None
    last_status: str | None  # starting, running, sending, connecting, succeeded, failed
    last_message: str | None
    failures_24h: int

    def overdue(self, now: datetime) -> timedelta | None:
        """How far past twice its period the job is without starting; None when on time or unknown."""
        period = schedule_period(self.schedule)
        if period is None or not self.active or self.last_start is None:
            return None
        late = now - self.last_start - 2 * period
        return late if late > timedelta(0) else None


def job_runs(conn: psycopg.Connection[Any]) -> list[JobRun]:
    rows = conn.execute(
        """
        SELECT j.jobname, j.schedule, j.active, d.start_time, d.end_time, d.status, d.return_message,
               (SELECT count(*) FROM cron.job_run_details f
                 WHERE f.jobid = j.jobid AND f.status = 'failed' AND f.start_time > now() - interval '1 day')
          FROM cron.job j
          LEFT JOIN LATERAL (
                SELECT start_time, end_time, status, return_message FROM cron.job_run_details r
                 WHERE r.jobid = j.jobid ORDER BY r.runid DESC LIMIT 1) d ON true
         WHERE j.jobname LIKE %s
         ORDER BY j.jobname
        """,
        (PREFIX + "%",),
    ).fetchall()
    return [JobRun(*row) for row in rows]


def schedule_period(schedule: str) -> timedelta | None:
    """The period of the simple cron forms used here (``*/N`` minutes, hourly, daily)."""
    fields = schedule.split()
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = fields
    if (dom, month, dow) != ("*", "*", "*"):
        return None
    if hour == "*":
        if minute == "*":
            return timedelta(minutes=1)
        step = re.fullmatch(r"\*/(\d+)", minute)
        if step:
            return timedelta(minutes=int(step.group(1)))
        if minute.isdigit():
            return timedelta(hours=1)
        return None
    if minute.isdigit() and hour.isdigit():
        return timedelta(days=1)
    return None


SERVICE = """\
# written by insights db schedule --systemd: {what}
[Unit]
Description=Amazon Insights: {what}
After=network-online.target

[Service]
Type=oneshot
EnvironmentFile=-/etc/insights/insights.env
ExecStart={cli}
"""

TIMER = """\
[Unit]
Description=Amazon Insights: {what} ({calendar})

[Timer]
OnCalendar={calendar}
# a run missed while the machine was off happens at boot
Persistent=true
RandomizedDelaySec=30

[Install]
WantedBy=timers.target
"""


#: where the retention timer archives a partition's rows before dropping it when
#: INSIGHTS_PG_RETENTION_ARCHIVE_DIR is unset and there is no pg_cron (Avro files and a
#: manifest; `insights archive restore` loads them back)
ARCHIVE_DIR = "/var/lib/insights/archive"

RETENTION = "insights-retention"
#: the retention's timer: daily, like the pg_cron job it replaces
RETENTION_CALENDAR = "*-*-* 02:23:00"
#: how often the retention is meant to run: status warns when the last run is older (plus grace)
RETENTION_PERIOD = timedelta(days=1)
RETENTION_GRACE = timedelta(hours=1)


def retention_command(archive_dir: Path | str) -> str:
    # a timer has no terminal: prune needs --yes, or it would refuse every time a partition is due
    return f"insights db partitions prune --yes --archive {archive_dir}"


def without_cron(archive_dir: Path | None) -> tuple[tuple[str, str, str], ...]:
    """Without pg_cron the in-server jobs become these (db maintain = refresh, vacuum, analyze)."""
    return (
        ("insights-partitions", "*-*-* *:07:00", "insights db partitions ensure"),
        (RETENTION, RETENTION_CALENDAR, retention_command(archive_dir or ARCHIVE_DIR)),
        # db maintain prunes too: the same archive, or a failed 02:23 retention run would
        # leave its partitions to be dropped un-archived by the 03:41 maintenance
        ("insights-maintain", "*-*-* 03:41:00", f"insights db maintain --archive {archive_dir or ARCHIVE_DIR}"),
    )


def systemd_units(insights_bin: str, *, with_cron: bool, archive_dir: Path | None = None) -> dict[str, str]:
    """One oneshot service + timer per job run from outside the server: with pg_cron, the
    Python and pgBackRest jobs, and the archiving retention when ``archive_dir`` is set."""
    units: dict[str, str] = {}
    if not with_cron:
        entries = list(OUTSIDE_JOBS) + list(without_cron(archive_dir))
    elif archive_dir is not None:
        entries = list(OUTSIDE_JOBS) + [(RETENTION, RETENTION_CALENDAR, retention_command(archive_dir))]
    else:
        entries = list(OUTSIDE_JOBS)
    for name, calendar, cli in entries:
        command = insights_bin + cli[len("insights"):]
        units[f"{name}.service"] = SERVICE.format(what=cli, cli=command)
        units[f"{name}.timer"] = TIMER.format(what=cli, calendar=calendar)
    return units
