"""PgBouncer in transaction pooling mode in front of the local PostgreSQL (Debian's package).

The seed's architecture puts PgBouncer between the application and PostgreSQL, with
``pool_mode = transaction``: a server connection belongs to a client only for one
transaction. Code that works through it must not depend on session state across
transactions (no session-level SET, no temp tables that outlive a transaction, no
server-side prepared statements before PgBouncer 1.21): the consumers are written so.

Authentication follows the stack's PostgreSQL:

* a plain stack (trust on loopback): ``auth_type = trust``, the permitted user names in
  ``userlist.txt`` with no passwords (none exist there);
* a TLS stack (``INSIGHTS_STACK_PG_TLS``): the same rules as PostgreSQL's own on both sides.
  Clients must use TLS 1.3 (``client_tls_sslmode = require``, a certificate for this
  PgBouncer from the stack CA, SANs 127.0.0.1/localhost, so clients connect with the
  stack's DSN parameters: verify-full, the CA, the passfile) and log in with SCRAM
  (``auth_type = scram-sha-256``). PgBouncer reaches PostgreSQL with verify-full against the
  stack CA and logs in with the SCRAM secrets in ``userlist.txt`` (0600), copied from
  ``pg_authid``: PgBouncer can use a SCRAM secret for the server login when the client
  also logged in with SCRAM and the secret is identical to the server's (same salt and
  iterations), so no clear-text password is written for it. A role given a password later
  (``insights db passwords``) reaches PgBouncer at its next ``stack up --with-pgbouncer``,
  which refreshes the file and reloads it.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.errors import StackError
from core.settings import Settings
from insights.stack import proc
from insights.stack.postgres import SUPERUSER, LocalPostgres, uri_query

CONFIG = """\
;; written by insights stack: transaction pooling in front of {target}
[databases]
* = host={target_host} port={target_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = {auth_type}
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

# A TLS stack: what PostgreSQL demands of its clients (TLS 1.3, SCRAM), PgBouncer demands of
# its own, and it checks PostgreSQL's certificate as every other client does.
TLS_CONFIG = """\
client_tls_sslmode = require
client_tls_cert_file = {root}/tls/pgbouncer.crt
client_tls_key_file = {root}/tls/pgbouncer.key
client_tls_protocols = tlsv1.3
server_tls_sslmode = verify-full
server_tls_ca_file = {ca}
server_tls_protocols = tlsv1.3
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
        users: tuple[str, ...] = ("insights", "postgres", "insights_ingest"),
    ) -> None:
        self.root = root or settings.stack.dir / "pgbouncer"
        self.port = port or settings.stack.pgbouncer_port
        self.target = target or PgBouncerTarget("127.0.0.1", settings.stack.pg_port)
        self.users = users
        # the server behind it, for the stack's TLS parameters (CA, passfile)
        self._server = LocalPostgres(settings, port=self.target.port)

    @property
    def tls(self) -> bool:
        """The stack's PostgreSQL is TLS + SCRAM: so is this PgBouncer."""
        return self._server.tls

    @property
    def pid_file(self) -> Path:
        return self.root / "pgbouncer.pid"

    @property
    def log(self) -> Path:
        return self.root / "pgbouncer.log"

    def dsn(self, dbname: str, user: str = "insights") -> str:
        """With TLS: the stack's parameters (verify-full, its CA; the passfile's lines are
        for any loopback port, this one included)."""
        params = self._server.tls_params()
        query = f"?{uri_query(params)}" if params else ""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}{query}"

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
        tls = self.tls
        conf = CONFIG.format(
            target=f"{self.target.host}:{self.target.port}",
            target_host=self.target.host,
            target_port=self.target.port,
            port=self.port,
            root=self.root,
            admin=self.users[0],
            auth_type="scram-sha-256" if tls else "trust",
        )
        if tls:
            self._ensure_certificate()
            conf += TLS_CONFIG.format(root=self.root, ca=self._server.tls_dir / "ca.crt")
        path = self.root / "pgbouncer.ini"
        path.write_text(conf, encoding="utf-8")
        self._write_auth_file()
        return path

    def _ensure_certificate(self) -> None:
        """This PgBouncer's certificate from the stack CA (kept; delete it to re-issue)."""
        from insights.stack import tls

        if not (self.root / "tls" / "pgbouncer.crt").exists():
            tls.issue(self.root / "tls", "pgbouncer", ca_dir=self._server.tls_dir)

    def _write_auth_file(self) -> None:
        """userlist.txt: the user names (plain stack), or their SCRAM secrets from the server
        (TLS stack; users without one are left out: they could not log in to it anyway).
        0600 from the start: pg_authid keeps them from everyone but superusers (a SCRAM secret
        lets its reader pose as the server to clients, and helps a dictionary attack)."""
        if self.tls:
            with psycopg.connect(host="127.0.0.1", port=self.target.port, user=SUPERUSER, dbname="postgres",
                                 connect_timeout=5, **self._server.tls_params()) as conn:
                rows = conn.execute(
                    "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s) AND rolcanlogin "
                    "AND rolpassword LIKE 'SCRAM-SHA-256$%%'", (list(self.users),)).fetchall()
            secrets = dict(rows)
            lines = [f'"{u}" "{secrets[u]}"\n' for u in self.users if u in secrets]
        else:
            lines = [f'"{u}" ""\n' for u in self.users]
        fd, tmp = tempfile.mkstemp(prefix=".userlist.", dir=self.root)  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
        os.replace(tmp, self.root / "userlist.txt")

    def up(self) -> str:
        """Idempotent: write the config, start the daemon, wait until it routes a query."""
        pid = self.running_pid()
        if pid and self.answers():
            if not self.tls:
                return "already running"
            # roles may have got passwords since it started (`insights db passwords`)
            self._reload(pid)
            return "already running (auth file reloaded)"
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

    def retarget(self) -> str:
        """Route to ``target`` from now on (a failover promoted another node): the
        configuration is rewritten and reloaded. PgBouncer closes each server connection to
        the old address when it is next released and opens new ones to the new address."""
        pid = self.running_pid()
        if not pid:
            return "not running"
        self._reload(pid)
        return f"now routes to port {self.target.port}"

    def _reload(self, pid: int) -> None:
        self.write_config()
        user = proc.service_user() if proc.is_root() else None
        if user:
            proc.chown_tree(self.root, user)
        os.kill(pid, signal.SIGHUP)  # PgBouncer re-reads its configuration and auth_file

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
