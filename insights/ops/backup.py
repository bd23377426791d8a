"""Backups, WAL archive and point-in-time recovery with pgBackRest (Debian's ``pgbackrest``).

What the seed had and why it is not used:

* WAL-E (``wal-e wal-push``) is unmaintained since 2019 (its authors moved to WAL-G);
  pgBackRest is packaged by Debian, verifies checksums, does full/diff/incr backups,
  parallel and delta restore, and expires backups and WAL by one retention rule.
* ``pg_start_backup()``/``pg_stop_backup()`` are gone in PostgreSQL 15 (renamed
  ``pg_backup_start``/``pg_backup_stop``, non-exclusive only): pgBackRest drives them.
* ``recovery.conf`` was removed in PostgreSQL 12: recovery settings go to
  ``postgresql.auto.conf`` with a ``recovery.signal`` file, which ``pgbackrest restore``
  writes itself (``restore_command``, ``recovery_target_time``).

Retention as the seed says: full backups 30 days (``repo1-retention-full-type=time``: a
full backup is expired only once a newer one is itself older than 30 days, so any moment of
the last 30 days stays restorable), WAL 30 days (pgBackRest keeps the archive of every
retained backup; it cannot express WAL retention in days, but this covers the same window).

The local stack's repository and configuration live under ``<stack dir>/pgbackrest``; a
deployment points ``INSIGHTS_PG_BACKUP_CONFIG`` at its own file (e.g. /etc/pgbackrest/...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from core.errors import StackError
from core.settings import Settings
from insights.stack import proc
from insights.stack.pgbackrest import (  # noqa: F401 - re-exported: the commands' vocabulary
    BACKUP_TYPES,
    BackupError,
    PgBackRest,
    config_path,
    configure_local_archiving,
    local_config,
    local_root,
)
from insights.stack.postgres import LocalPostgres

@dataclass(frozen=True)
class BackupInfo:
    label: str
    kind: str
    started: datetime
    stopped: datetime
    size: int | None
    wal_start: str | None
    wal_stop: str | None
    #: the backup a diff/incr was taken against (a diff: its full; an incr: the previous backup)
    prior: str | None = None
    #: every backup whose files it reuses: what a restore of it needs (the chain)
    reference: tuple[str, ...] = ()


def backups_of(info: dict[str, Any]) -> list[BackupInfo]:
    found = []
    for item in info.get("backup", []):
        stamp = item.get("timestamp", {})
        archive = item.get("archive", {})
        found.append(
            BackupInfo(
                label=item.get("label", "?"),
                kind=item.get("type", "?"),
                started=datetime.fromtimestamp(stamp.get("start", 0), UTC),
                stopped=datetime.fromtimestamp(stamp.get("stop", 0), UTC),
                size=(item.get("info") or {}).get("size"),
                wal_start=archive.get("start"),
                wal_stop=archive.get("stop"),
                prior=item.get("prior"),
                reference=tuple(item.get("reference") or ()),
            )
        )
    return sorted(found, key=lambda b: b.stopped)


# --- point-in-time restore -------------------------------------------------------------------
@dataclass
class RestoreReport:
    root: Path
    port: int
    target: str
    reached: bool
    last_commit: datetime | None
    tables: dict[str, int] = field(default_factory=dict)
    offsets: list[tuple[str, str, int]] = field(default_factory=list)  # group, topic, sum of next offsets
    stop_command: str = ""
    #: how to reach the copy: a TLS stack's copy has the primary's pg_hba.conf and
    #: certificate, so the stack's CA and passfile (the stack DSN's parameters)
    dsn: str = ""


def _parse_time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BackupError(f"--to-time {value!r} is not an ISO 8601 time, e.g. 2025-03-01T12:00:00+00:00") from None
    if when.tzinfo is None:
        raise BackupError(f"--to-time {value!r} has no time zone: add one, e.g. +00:00 (times are ambiguous without)")
    return when


def restore(
    settings: Settings,
    *,
    to_time: str,
    into: Path,
    port: int,
    progress: Callable[[str], None] = lambda _m: None,
    timeout: float = 600,
) -> RestoreReport:
    """Restore the newest backup before ``to_time`` into ``into/data``, replay WAL to that time,
    start it on ``port`` beside the running cluster and report what it holds.

    The copy is promoted when it reaches the target (``--target-action=promote``), does not
    archive (``--archive-mode=off``: its new timeline must not mix into the production
    stanza) and does not load pg_cron (its copies of the scheduled jobs must not run).
    """
    when = _parse_time(to_time)
    # the form pgBackRest accepts (and PostgreSQL's recovery_target_time too), in UTC
    target = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    tool = PgBackRest(settings)
    proc.require_port_free(port, "the restored cluster", "--port")
    server = LocalPostgres(settings, root=into, port=port)
    if server.running_pid():
        raise BackupError(f"a server is running in {into}: stop it first (pg_ctl -D {server.paths.data} stop)")
    into.mkdir(parents=True, exist_ok=True)
    server.paths.data.mkdir(parents=True, exist_ok=True)
    server.paths.data.chmod(0o700)
    delta = any(server.paths.data.iterdir())
    if proc.is_root():
        into.chmod(0o755)
        proc.chown_tree(into, proc.service_user())
    progress(f"restoring the newest backup before {target} into {server.paths.data}")
    args = [
        "restore",
        f"--pg1-path={server.paths.data}",
        "--type=time",
        f"--target={target}",
        "--target-action=promote",
        "--archive-mode=off",
    ]
    if delta:  # confirmed by the caller: pgBackRest replaces what differs
        args.append("--delta")
    tool.run(*args, timeout=timeout, what="pgbackrest restore")
    with open(server.paths.data / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write(
            "\n# --- written by insights backup restore: a copy beside the running cluster ---\n"
            f"port = {port}\n"
            f"unix_socket_directories = '{server.paths.socket_dir}'\n"
            "shared_preload_libraries = ''\n"
            "cluster_name = 'restore'\n"
        )
    server.paths.socket_dir.mkdir(parents=True, exist_ok=True)
    if proc.is_root():
        proc.chown_tree(into, proc.service_user())
    progress(f"starting the restored cluster on port {port} and replaying WAL to {target}")
    try:
        server._pg_ctl("-o", f"-p {port}", "-w", "-t", str(int(timeout)), "start", timeout=timeout + 30)
    except StackError as exc:
        raise BackupError(f"{exc}; see {server.paths.log}") from None
    deadline = time.monotonic() + timeout
    while server.in_recovery() is not False:
        if time.monotonic() > deadline:
            raise BackupError(f"the restored cluster did not finish recovery within {timeout:.0f}s; see {server.paths.log}")
        if not server.running_pid():
            raise BackupError(f"the restored cluster stopped during recovery; see {server.paths.log}")
        time.sleep(0.3)
    report = RestoreReport(
        root=into,
        port=port,
        target=target,
        reached=True,
        last_commit=None,
        stop_command=f"pg_ctl -D {server.paths.data} stop",
        dsn=server.dsn,
    )
    _describe(server, report)
    return report


def _describe(server: LocalPostgres, report: RestoreReport) -> None:
    with psycopg.connect(server.dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT (pg_last_committed_xact()).timestamp").fetchone()
        report.last_commit = row[0] if row else None
        tables = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        ).fetchall()
        conn.execute("SET statement_timeout = '10s'")
        for (name,) in tables:
            try:
                counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", name))).fetchone()
            except psycopg.errors.QueryCanceled:
                continue  # too big to count here; the report lists what it could
            report.tables[name] = int(counted[0]) if counted else 0
        if "consumer_offsets" in report.tables:
            report.offsets = [
                (g, t, int(n))
                for g, t, n in conn.execute(
                    "SELECT consumer_group, topic, sum(next_offset) FROM consumer_offsets GROUP BY 1, 2 ORDER BY 1, 2"
                ).fetchall()
            ]
