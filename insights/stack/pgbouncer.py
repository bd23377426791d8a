"""PgBouncer in transaction pooling mode in front of the local PostgreSQL (Debian's package).

The seed's architecture puts PgBouncer between the application and PostgreSQL, with
``pool_mode = transaction``: a server connection belongs to a client only for one
transaction. Code that works through it must not depend on session state across
transactions (no session-level SET, no temp tables that outlive a transaction, no
server-side prepared statements before PgBouncer 1.21): the consumers are written so.

Authentication is ``trust`` towards the loopback-only PostgreSQL of the local stack,
with the permitted user names in ``userlist.txt`` (no passwords: none exist here).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.errors import StackError
from core.settings import Settings
from insights.stack import proc

CONFIG = """\
;; written by insights stack: transaction pooling in front of {target}
[databases]
* = host={target_host} port={target_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/userlist.txt
admin_users = {admin}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 25
min_pool_size = 0
reserve_pool_size = 5
reserve_pool_timeout = 3
max_db_connections = 100
server_reset_query = DISCARD ALL
;; libpq and psycopg send these at startup; PgBouncer must not refuse them
ignore_startup_parameters = extra_float_digits,options,application_name
server_connect_timeout = 5
server_login_retry = 1
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
"""


@dataclass(frozen=True)
class PgBouncerTarget:
    host: str
    port: int


def binary(install: bool = True) -> str:
    """Debian's pgbouncer; installed with apt-get (as root) when missing."""
    found = shutil.which("pgbouncer") or (("/usr/sbin/pgbouncer") if Path("/usr/sbin/pgbouncer").exists() else None)
    if found:
        return found
    if install and proc.is_root() and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            proc.run(["apt-get", "install", "-y", "-q", "pgbouncer"], env=env, what="apt-get install pgbouncer", timeout=900)
        except StackError:
            proc.run(["apt-get", "update", "-q"], what="apt-get update", timeout=600)
            proc.run(["apt-get", "install", "-y", "-q", "pgbouncer"], env=env, what="apt-get install pgbouncer", timeout=900)
        return binary(install=False)
    raise StackError("pgbouncer not found: install Debian's pgbouncer package (apt-get install pgbouncer)")


class LocalPgBouncer:
    """One PgBouncer process with its config, log and pid file under ``root``."""

    def __init__(
        self,
        settings: Settings,
        *,
        root: Path | None = None,
        port: int | None = None,
        target: PgBouncerTarget | None = None,
        users: tuple[str, ...] = ("insights", "postgres"),
    ) -> None:
        self.root = root or settings.stack.dir / "pgbouncer"
        self.port = port or settings.stack.pgbouncer_port
        self.target = target or PgBouncerTarget("127.0.0.1", settings.stack.pg_port)
        self.users = users

    @property
    def pid_file(self) -> Path:
        return self.root / "pgbouncer.pid"

    @property
    def log(self) -> Path:
        return self.root / "pgbouncer.log"

    def dsn(self, dbname: str, user: str = "insights") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def running_pid(self) -> int | None:
        return proc.read_pid(self.pid_file) if self.pid_file.exists() else None

    def answers(self, dbname: str = "postgres") -> bool:
        try:
            with psycopg.connect(self.dsn(dbname), connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = CONFIG.format(
            target=f"{self.target.host}:{self.target.port}",
            target_host=self.target.host,
            target_port=self.target.port,
            port=self.port,
            root=self.root,
            admin=self.users[0],
        )
        path = self.root / "pgbouncer.ini"
        path.write_text(conf, encoding="utf-8")
        (self.root / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in self.users), encoding="utf-8")
        return path

    def up(self) -> str:
        """Idempotent: write the config, start the daemon, wait until it routes a query."""
        if self.running_pid() and self.answers():
            return "already running"
        program = binary()
        proc.require_port_free(self.port, "PgBouncer", "INSIGHTS_STACK_PGBOUNCER_PORT")
        config = self.write_config()
        # PgBouncer refuses to run as root: run it as the PostgreSQL service user
        user = proc.service_user() if proc.is_root() else None
        if user:
            proc.chown_tree(self.root, user)
        try:
            proc.run([program, "-d", "-q", str(config)], user=user, what="pgbouncer", timeout=30)
        except StackError as exc:
            raise StackError(f"{exc}; last log line: {self._last_log_line()}") from None
        if not proc.wait_for(lambda: self.running_pid() is not None and self.answers(), 20):
            raise StackError(f"PgBouncer started but does not answer on port {self.port}; see {self.log}")
        return "started"

    def _last_log_line(self) -> str:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return f"(no log at {self.log}: can the service user enter {self.root}?)"
        return lines[-1] if lines else "(empty log)"

    def down(self) -> str:
        pid = self.running_pid()
        if not pid:
            return "not running"
        proc.stop_pid(pid, timeout=10)
        return "stopped"
