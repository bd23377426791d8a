"""Health of the PostgreSQL operations, as structured findings for ``insights status``.

Three checks, each returning :class:`Finding` rows (never raising for an unreachable
server: that is itself the finding, reported by the caller's guard):

* :func:`replicas`: per streaming replica, replay lag in bytes and seconds against
  ``INSIGHTS_PG_REPLICA_LAG_MAX_BYTES`` / ``_MAX_S``; a physical slot without a connected
  replica (it keeps WAL on the primary until the replica returns or the slot is dropped);
* :func:`backups`: WAL archiving (``pg_stat_archiver``: failing when the last failure is
  newer than the last success) and the newest pgBackRest backup's age against
  ``INSIGHTS_PG_BACKUP_MAX_AGE_H``;
* :func:`scheduled_jobs`: each ``insights-*`` pg_cron job's last run and outcome
  (``cron.job_run_details``), failures in the last day, and jobs that stopped running; and
  the retention's last recorded run (``retention_runs``), the only watch on it when it
  archives from a systemd timer (:func:`retention_finding`).

All three ask the primary (``INSIGHTS_PG_DSN``): lag, archiver and cron state are the
primary's facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from core.settings import Settings
from streams.pg import connect

RUNBOOK = "docs/runbooks.md"


@dataclass(frozen=True)
class Finding:
    area: str
    what: str
    state: str  # in words: streaming, LAGGING, ok, FAILING, succeeded, STOPPED...
    detail: str = ""
    #: how ``insights status`` grades it: ok, warn (look at it today), fail, unknown
    level: str = "ok"
    #: the figures behind it, for ``status --json`` and monitoring
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.level == "ok"


@dataclass(frozen=True)
class ReplicaLag:
    name: str  # application_name (the replica's cluster_name) or its slot
    slot: str | None
    state: str  # streaming, catchup, ... or "disconnected"
    lag_bytes: int | None  # the primary's current WAL position minus the replica's replay position
    lag_s: float | None  # replay_lag: NULL once the replica caught up and no WAL is written
    retained_bytes: int | None  # WAL the slot keeps on the primary


REPLICAS = """
SELECT coalesce(r.application_name, s.slot_name) AS name, s.slot_name,
       coalesce(r.state, 'disconnected') AS state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS lag_bytes,
       extract(epoch FROM r.replay_lag)::float8 AS lag_s,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes
  FROM pg_stat_replication r
  FULL JOIN (SELECT * FROM pg_replication_slots WHERE slot_type = 'physical') s ON s.active_pid = r.pid
 -- the CDC reader's walsender streams a logical slot: not a replica
 WHERE r.pid IS NULL OR r.pid NOT IN (SELECT active_pid FROM pg_replication_slots
                                      WHERE slot_type = 'logical' AND active_pid IS NOT NULL)
 ORDER BY 1
"""


def replica_lag(conn: psycopg.Connection[Any]) -> list[ReplicaLag]:
    return [ReplicaLag(*row) for row in conn.execute(REPLICAS).fetchall()]


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


def replicas(settings: Settings) -> list[Finding]:
    with connect(settings.pg, "status-replicas", connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row and row[0]:
            return [Finding("replicas", "-", "standby", "INSIGHTS_PG_DSN reached a standby, not the primary",
                            level="fail")]
        lags = replica_lag(conn)
    if not lags:
        return [Finding("replicas", "-", "none", "no streaming replica and no physical slot")]
    max_bytes, max_s = settings.pg.replica_lag_max_bytes, settings.pg.replica_lag_max_s
    rows = []
    for lag in lags:
        if lag.state == "disconnected":
            rows.append(Finding(
                "replicas", lag.name, "disconnected",
                f"slot {lag.slot} keeps {_size(lag.retained_bytes)} of WAL on the primary; "
                f"see {RUNBOOK}#replica-lagging",
                level="warn",
                metrics={"connected": False, "retained_bytes": lag.retained_bytes},
            ))
            continue
        seconds = lag.lag_s or 0.0
        too_far = (lag.lag_bytes or 0) > max_bytes or seconds > max_s
        detail = (
            f"replay lag {_size(lag.lag_bytes)}, {seconds:.2f} s"
            + (" (idle, caught up)" if lag.lag_s is None and not lag.lag_bytes else "")
            + f"; limits {_size(max_bytes)}, {max_s:g} s"
        )
        if too_far:
            detail += f"; see {RUNBOOK}#replica-lagging"
        rows.append(Finding(
            "replicas", lag.name, "LAGGING" if too_far else lag.state, detail,
            level="warn" if too_far else "ok",
            metrics={"connected": True, "lag_bytes": lag.lag_bytes or 0, "lag_seconds": seconds,
                     "retained_bytes": lag.retained_bytes},
        ))
    return rows


def backups(settings: Settings) -> list[Finding]:
    from insights.ops.backup import BackupError, PgBackRest, backups_of, config_path

    with connect(settings.pg, "status-backups", connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT current_setting('archive_mode'), current_setting('archive_command'), archived_count,"
            " last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time"
            " FROM pg_stat_archiver"
        ).fetchone()
    assert row is not None
    mode, command, archived, last_wal, last_time, failed, failed_wal, failed_time = row
    rows: list[Finding] = []
    if mode == "off" or command in ("", "true"):
        rows.append(Finding(
            "backups", "wal-archive", "off",
            f"archive_mode={mode}, no point-in-time recovery possible; see {RUNBOOK}#backups",
            # a stack from before archiving: say it plainly, but it is how that cluster was made
            metrics={"archive_mode": mode},
        ))
        if config_path(settings) is None:
            return rows
    elif failed_time is not None and (last_time is None or failed_time > last_time):
        rows.append(Finding(
            "backups", "wal-archive", "FAILING",
            f"{failed} failures, last {failed_wal} at {failed_time:%Y-%m-%d %H:%M:%S}; "
            f"WAL piles up in pg_wal; see {RUNBOOK}#backups",
            level="fail",
            metrics={"failed_count": failed, "archived_count": archived},
        ))
    else:
        rows.append(Finding(
            "backups", "wal-archive", "ok",
            f"{archived} segments archived, last {last_wal or '-'}"
            + (f" at {last_time:%Y-%m-%d %H:%M:%S}" if last_time else ""),
            metrics={"failed_count": failed, "archived_count": archived},
        ))
    try:
        info = PgBackRest(settings).info()
    except BackupError as exc:
        rows.append(Finding("backups", "pgBackRest", "unavailable", str(exc), level="unknown"))
        return rows
    found = backups_of(info)
    if not found:
        rows.append(Finding("backups", info.get("name", "-"), "no backup",
                            "run: insights backup full", level="fail", metrics={"backups": 0}))
        return rows
    newest = found[-1]
    age_h = (datetime.now(UTC) - newest.stopped).total_seconds() / 3600
    fulls = [b for b in found if b.kind == "full"]
    old = age_h > settings.pg.backup_max_age_h
    rows.append(Finding(
        "backups", info.get("name", "-"), "TOO OLD" if old else "ok",
        f"newest {newest.kind} {newest.label} {age_h:.1f} h ago (limit {settings.pg.backup_max_age_h:g} h); "
        f"{len(found)} backups, {len(fulls)} full, oldest {found[0].stopped:%Y-%m-%d}",
        level="fail" if old else "ok",
        metrics={"backups": len(found), "full_backups": len(fulls), "newest_age_hours": round(age_h, 2)},
    ))
    return rows


def scheduled_jobs(settings: Settings) -> list[Finding]:
    from insights.db.retention import last_run
    from insights.ops.schedule import RETENTION, cron_state, job_runs

    with connect(settings.pg, "status-cron", connect_timeout=5) as conn:
        state = cron_state(conn)
        runs = job_runs(conn) if state.installed else []
        last = last_run(conn)
    archive_dir = settings.pg.retention_archive_dir
    retention = retention_finding(last, archive_dir=archive_dir, now=datetime.now(UTC),
                                  cron_drops=any(r.name == RETENTION for r in runs))
    extra = [] if retention is None else [retention]
    if not state.installed:
        why = "not loaded" if not state.loaded else "extension not created"
        if not state.available:
            why = "not installed"
        return [Finding("schedule", "pg_cron", why,
                        f"maintenance runs from systemd timers; see {RUNBOOK}#scheduled-maintenance")] + extra
    if not runs:
        return [Finding("schedule", "pg_cron", "no jobs", "run: insights db schedule", level="warn")] + extra
    return _cron_rows(runs) + extra


def retention_finding(
    last: Any, *, archive_dir: Path | None, now: datetime, cron_drops: bool
) -> Finding | None:
    """The retention's last recorded run (``retention_runs``, insights/db/retention.py).

    With ``INSIGHTS_PG_RETENTION_ARCHIVE_DIR`` set the retention runs from a systemd timer that
    pg_cron does not watch, so this row is its only watch: no run, a failed run, a run still
    'running' after a period (killed), or no run within its period is a warning. Without the
    setting the pg_cron job's own row watches it, and this row (when any run is recorded) only
    shows what the last run did."""
    from insights.ops.schedule import RETENTION, RETENTION_GRACE, RETENTION_PERIOD

    runbook = f"see {RUNBOOK}#a-job-stopped-running"
    if archive_dir is None:
        if last is None:
            return None
        name = "retention_runs"
    else:
        name = RETENTION
        if cron_drops:
            return Finding("schedule", name, "NOT ARCHIVED",
                           f"pg_cron's {RETENTION} drops partitions without the archive though "
                           f"INSIGHTS_PG_RETENTION_ARCHIVE_DIR={archive_dir}: run `insights db schedule` again",
                           level="warn", metrics={"cron_drops": True})
        if last is None:
            return Finding("schedule", name, "never run",
                           f"no retention run recorded: enable the timer (`insights db schedule --systemd DIR`) "
                           f"or run `insights db partitions prune --yes` once; {runbook}",
                           level="warn", metrics={"runs": 0})
    took = (last.ended_at - last.started_at).total_seconds() if last.ended_at else None
    metrics: dict[str, Any] = {
        "runner": last.runner, "outcome": last.outcome, "started_at": last.started_at.isoformat(),
        "partitions_due": last.due, "partitions_dropped": last.dropped, "rows_archived": last.rows_archived,
        "archive_dir": last.archive_dir, "last_seconds": took,
    }
    what = (f"{last.runner} {last.outcome} at {last.started_at:%Y-%m-%d %H:%M:%S}"
            + (f" ({took:.1f} s)" if took is not None else "")
            + f": dropped {last.dropped} of {last.due} partition(s), "
            + (f"archived {last.rows_archived:,} row(s) to {last.archive_dir}" if last.archive_dir else "no archive"))
    if last.outcome == "failed":
        return Finding("schedule", name, "FAILED", f"{what}: {last.message or '?'}; {runbook}",
                       level="warn", metrics=metrics)
    age = now - last.started_at
    if archive_dir is not None and age > RETENTION_PERIOD + RETENTION_GRACE:
        state = "STOPPED" if last.outcome == "succeeded" else "STUCK"
        return Finding("schedule", name, state,
                       f"{what}; no run for {age.total_seconds() / 3600:.1f} h (every "
                       f"{RETENTION_PERIOD.total_seconds() / 3600:g} h); {runbook}",
                       level="warn", metrics={**metrics, "age_seconds": int(age.total_seconds())})
    return Finding("schedule", name, last.outcome, what, metrics=metrics)


def _cron_rows(runs: list[Any]) -> list[Finding]:
    now = datetime.now(UTC)
    rows = []
    for run in runs:
        late = run.overdue(now)
        if not run.active:
            rows.append(Finding("schedule", run.name, "inactive", f"{run.schedule}; cron.job.active is false",
                                level="warn", metrics={"active": False}))
        elif run.last_start is None:
            rows.append(Finding("schedule", run.name, "not run yet", run.schedule))
        elif run.last_status == "failed":
            message = (run.last_message or "").strip().splitlines()[0] if run.last_message else ""
            rows.append(Finding(
                "schedule", run.name, "FAILED",
                f"last run {run.last_start:%Y-%m-%d %H:%M:%S}: {message}; see {RUNBOOK}#a-job-stopped-running",
                # one failed run: the next may succeed (a lock timeout); a job that stops is a failure
                level="warn",
                metrics={"last_status": "failed", "failures_24h": run.failures_24h},
            ))
        elif late is not None:
            rows.append(Finding(
                "schedule", run.name, "STOPPED",
                f"{run.schedule}: last started {run.last_start:%Y-%m-%d %H:%M:%S}, overdue by "
                f"{int(late.total_seconds())} s; see {RUNBOOK}#a-job-stopped-running",
                level="fail",
                metrics={"last_status": run.last_status, "overdue_seconds": int(late.total_seconds())},
            ))
        else:
            took = (run.last_end - run.last_start).total_seconds() if run.last_end else None
            detail = f"{run.schedule}: last {run.last_status} at {run.last_start:%Y-%m-%d %H:%M:%S}"
            if took is not None:
                detail += f" ({took:.1f} s)"
            if run.failures_24h:
                detail += f"; {run.failures_24h} failures in 24 h"
            rows.append(Finding("schedule", run.name, run.last_status or "?", detail,
                                metrics={"last_status": run.last_status, "failures_24h": run.failures_24h,
                                         "last_seconds": took}))
    return rows


CHECKS = (("replicas", replicas), ("backups", backups), ("schedule", scheduled_jobs))
