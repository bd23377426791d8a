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

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from core.errors import InsightsError, StackError
from core.settings import Settings
from insights.stack import proc
from insights.stack.postgres import SUPERUSER, LocalPostgres

BINARY = "/usr/bin/pgbackrest"
BACKUP_TYPES = ("full", "diff", "incr")


class BackupError(InsightsError):
    """pgBackRest is missing, not configured, or failed."""


def local_root(settings: Settings) -> Path:
    return settings.stack.dir / "pgbackrest"


def local_config(settings: Settings) -> Path:
    return local_root(settings) / "pgbackrest.conf"


def config_path(settings: Settings) -> Path | None:
    """The configuration pgBackRest is run with: the setting, else the local stack's if written."""
    if settings.pg.backup_config is not None:
        return settings.pg.backup_config
    local = local_config(settings)
    return local if local.exists() else None


LOCAL_CONFIG = """\
# written by insights stack up: pgBackRest for the local stack (docs/runbooks.md#backups)
[global]
repo1-path={root}/repo
# the seed's retention: full backups 30 days; WAL is kept for every retained backup
repo1-retention-full-type=time
repo1-retention-full=30
repo1-retention-archive-type=full
compress-type=lz4
# an immediate checkpoint: a local backup should not wait for the next scheduled one
start-fast=y
# a WAL segment is archived once and checked against the repository's copy (checksum)
archive-check=y
log-path={root}/log
lock-path={root}/lock
spool-path={root}/spool
log-level-console=warn
log-level-file=info

[{stanza}]
pg1-path={data}
pg1-port={port}
pg1-socket-path={socket_dir}
pg1-user={user}
"""


def write_local_config(settings: Settings, primary: LocalPostgres) -> Path:
    root = local_root(settings)
    for sub in ("repo", "log", "lock", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    path = local_config(settings)
    path.write_text(
        LOCAL_CONFIG.format(
            root=root,
            stanza=settings.pg.backup_stanza,
            data=primary.paths.data,
            port=primary.port,
            socket_dir=primary.paths.socket_dir,
            user=SUPERUSER,
        ),
        encoding="utf-8",
    )
    if proc.is_root():
        # the server (running as postgres) pushes WAL into the repository
        proc.chown_tree(root, proc.service_user())
    return path


class PgBackRest:
    """``pgbackrest`` with this project's configuration and stanza."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stanza = settings.pg.backup_stanza
        found = config_path(settings)
        if found is None:
            raise BackupError(
                "no pgBackRest configuration: run `insights stack up` (writes the local stack's) "
                "or set INSIGHTS_PG_BACKUP_CONFIG"
            )
        self.config = found

    @staticmethod
    def available() -> bool:
        return Path(BINARY).exists() or shutil.which("pgbackrest") is not None

    def command(self, *args: str) -> list[str]:
        binary = BINARY if Path(BINARY).exists() else (shutil.which("pgbackrest") or "pgbackrest")
        return [binary, f"--config={self.config}", f"--stanza={self.stanza}", *args]

    def archive_command(self) -> str:
        return " ".join(self.command("archive-push", "%p"))

    def run(self, *args: str, timeout: float = 3600, what: str | None = None) -> subprocess.CompletedProcess[str]:
        if not self.available():
            raise BackupError("pgbackrest is not installed: run `insights stack up` (installs Debian's pgbackrest)")
        # pgBackRest reads the data files and writes the repository as the server's OS user
        user = proc.service_user() if proc.is_root() else None
        try:
            return proc.run(self.command(*args), user=user, what=what or f"pgbackrest {args[0]}", timeout=timeout)
        except StackError as exc:
            raise BackupError(str(exc)) from None

    # --- commands ------------------------------------------------------------------------
    def stanza_create(self) -> None:
        self.run("stanza-create", what="pgbackrest stanza-create")

    def backup(self, kind: str) -> None:
        if kind not in BACKUP_TYPES:
            raise BackupError(f"unknown backup type {kind!r}: one of {', '.join(BACKUP_TYPES)}")
        # expiry by the retention runs after every successful backup (pgBackRest's default)
        self.run("backup", f"--type={kind}", what=f"pgbackrest backup --type={kind}")

    def check(self) -> None:
        """Switches WAL and waits until the segment is in the repository: archiving works end to end."""
        self.run("check", timeout=180, what="pgbackrest check")

    def info(self) -> dict[str, Any]:
        done = self.run("info", "--output=json", timeout=120, what="pgbackrest info")
        try:
            stanzas = json.loads(done.stdout or "[]")
        except ValueError as exc:
            raise BackupError(f"pgbackrest info returned no JSON: {exc}") from None
        for stanza in stanzas:
            if stanza.get("name") == self.stanza:
                return dict(stanza)
        raise BackupError(f"stanza {self.stanza!r} not found in {self.config}: run `insights stack up`")


@dataclass(frozen=True)
class BackupInfo:
    label: str
    kind: str
    started: datetime
    stopped: datetime
    size: int | None
    wal_start: str | None
    wal_stop: str | None


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
            )
        )
    return sorted(found, key=lambda b: b.stopped)


def configure_local_archiving(settings: Settings, primary: LocalPostgres) -> str:
    """Point the local primary's archive_command at pgBackRest and create the stanza.

    Idempotent. Touches nothing when the cluster does not archive (``archive_mode`` is
    off in clusters initialised before archiving existed here: turning it on needs a
    restart, which ``stack up`` never does to a running cluster behind your back).
    """
    if not PgBackRest.available():
        return "no backups: pgbackrest is not installed"
    with psycopg.connect(primary.admin_dsn, autocommit=True, connect_timeout=5) as conn:
        mode = conn.execute("SHOW archive_mode").fetchone()
        current = conn.execute("SHOW archive_command").fetchone()
        if mode is None or mode[0] == "off":
            return (
                "no WAL archive: archive_mode is off in this cluster (initialised before archiving); "
                "a new stack directory gets it (docs/runbooks.md#backups)"
            )
        write_local_config(settings, primary)
        tool = PgBackRest(settings)
        tool.stanza_create()
        wanted = tool.archive_command()
        if current is None or current[0] != wanted:
            conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(wanted)))
            conn.execute("SELECT pg_reload_conf()")
    return f"WAL archive and backups by pgBackRest (stanza {settings.pg.backup_stanza}, repo {local_root(settings)}/repo)"


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
