"""pgBackRest, the program: its configuration and commands, for the stack and for ``insights backup``.

The local stack's repository and configuration live under ``<stack dir>/pgbackrest``; a
deployment points ``INSIGHTS_PG_BACKUP_CONFIG`` at its own file. ``stack up`` writes the
local configuration, creates the stanza and points the primary's ``archive_command`` at
``pgbackrest archive-push`` (:func:`configure_local_archiving`). Why pgBackRest and the
retention chosen: ``insights/ops/backup.py`` and docs/runbooks.md#backups.
"""

from __future__ import annotations

import json
import shutil
import subprocess
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


#: pgBackRest error codes: option missing for the stanza (037), info file missing (055)
_NO_STANZA = {"037", "055"}
#: archive_command not pgBackRest's (068), a WAL segment not archived in time (082)
_ARCHIVE_BROKEN = {"068", "082"}


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
        what = what or f"pgbackrest {args[0]}"
        try:
            done = proc.run(self.command(*args), user=user, what=what, timeout=timeout, check=False)
        except StackError as exc:  # not found, or timed out
            raise BackupError(str(exc)) from None
        if done.returncode != 0:
            raise BackupError(self.explain(what, done.stderr or done.stdout or f"exit code {done.returncode}"))
        return done

    def explain(self, what: str, output: str) -> str:
        """pgBackRest's error as one line naming the fix, for the failures an operator meets
        first: a stanza that does not exist, WAL archiving that does not work."""
        lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
        error = next((line for line in lines if line.startswith("ERROR:")), lines[-1] if lines else "?")
        code = error.split("[", 1)[1].split("]", 1)[0] if error.startswith("ERROR: [") else ""
        if code in _NO_STANZA or any("does this stanza exist" in line for line in lines):
            return (f"{what} failed: stanza {self.stanza!r} does not exist ({error}): create it with "
                    f"`pgbackrest --config={self.config} --stanza={self.stanza} stanza-create` "
                    "(`insights stack up` does for the local stack) or fix INSIGHTS_PG_BACKUP_STANZA")
        if code in _ARCHIVE_BROKEN:
            return (f"{what} failed: WAL archiving is broken ({error}): archive_command must be "
                    f"`{self.archive_command()}` and succeed; see pg_stat_archiver and the server log "
                    "(docs/runbooks.md#backups), then `insights backup check`")
        return f"{what} failed: {error}"

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
                code = (stanza.get("status") or {}).get("code")
                if code in (1, 3):  # missing stanza path / missing stanza data: never created here
                    message = (stanza.get("status") or {}).get("message", "?")
                    raise BackupError(self.explain("pgbackrest info", f"ERROR: [055]: {message}"))
                return dict(stanza)
        raise BackupError(f"stanza {self.stanza!r} not found in {self.config}: run `insights stack up`")


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
    if not tool.info().get("backup"):
        # A WAL archive without a base backup restores nothing, and `insights status` rightly
        # fails on it. A new stack takes its first full backup here (seconds on a new
        # cluster), as a production cluster gets one right after its stanza is created.
        tool.backup("full")
    return f"WAL archive and backups by pgBackRest (stanza {settings.pg.backup_stanza}, repo {local_root(settings)}/repo)"
