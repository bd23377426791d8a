"""A throw-away PostgreSQL 15 cluster under ``.stack/pg``, from Debian's packages.

Loopback only, ``wal_level=logical`` for the CDC reader, trust authentication on
127.0.0.1 (the cluster is a developer's and CI's, never a deployment). When run as
root the server runs as the ``postgres`` OS user, since initdb refuses root.

The same class runs the streaming replicas of ``insights stack up --replicas N``
(``insights/stack/replicas.py``): another root directory and port, a data directory
made by ``pg_basebackup`` instead of initdb.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from core.errors import StackError
from core.settings import Settings
from insights.stack import proc

PG_MAJOR = "15"
SUPERUSER = "insights"
DATABASE = "insights"

#: the planner cost of a random page the project is tuned and tested with (see SERVER_CONF)
RANDOM_PAGE_COST = 1.1

# Appended to postgresql.conf once, at init. Sized for a 2-core, 24 GiB machine.
SERVER_CONF = """
# --- written by insights stack ---
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 300
shared_buffers = '512MB'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
# a slot that falls behind is invalidated rather than filling the disk
max_slot_wal_keep_size = '8GB'
wal_sender_timeout = '60s'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
# the working set is in memory (or on SSD): an index probe costs little more than a
# sequential page. With the spinning-disk default of 4, the consumers' batch statements
# (a few hundred keys joined to a state table) were planned as hash joins over a whole
# table of up to ~100k rows, so each batch cost grew with the table (BENCHMARKS.md
# "Downstream latency"; tests/summaries/test_plans.py)
random_page_cost = {random_page_cost}
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
# archive_mode needs a restart to change, so it is on from the start. Until
# `insights stack up` points archive_command at pgBackRest (insights/stack/pgbackrest.py), the
# placeholder `true` lets finished segments go: no base backup exists yet that they could
# extend, and an empty archive_command would keep every segment forever instead.
archive_mode = on
archive_command = 'true'
archive_timeout = '60s'
# replicas: the standby answers read-only queries, and tells the primary which rows its
# queries still see, so vacuum on the primary does not cancel them (the price: dead rows
# live a little longer on the primary while a long replica query runs)
hot_standby = on
hot_standby_feedback = on
# commit times of the last transactions: `insights backup restore` reports the newest
# commit a restored cluster holds
track_commit_timestamp = on
"""

# pg_cron runs the jobs of `insights db schedule` inside the server (a background worker:
# only loadable at start). Connecting through the socket directory avoids localhost
# resolving to ::1, where this server does not listen.
CRON_CONF = """
cron.database_name = '{database}'
cron.host = '{socket_dir}'
"""

# pgaudit (Debian's postgresql-15-pgaudit): the audit log of docs/security.md, in server.log
# as `AUDIT:` lines (`insights db audit` reads them). The seed asks for 'all'; every read and
# write of the ingest path would then be a log line (its cost is in BENCHMARKS.md), so the
# default logs what changes the schema and the roles, for everyone, and writes too for the
# admin role (ALTER ROLE app_admin SET pgaudit.log, done at start). Parameters are never
# logged: a bound value may be a secret.
AUDIT_CONF = """
pgaudit.log = 'ddl, role'
pgaudit.log_catalog = off
pgaudit.log_parameter = off
pgaudit.log_relation = on
"""
ADMIN_AUDIT = "write, ddl"

# TLS for every TCP connection, TLS 1.3 only (every client here is libpq 15+/librdkafka 2);
# certificate from the stack CA (insights/stack/tls.py). Passwords only as SCRAM.
TLS_CONF = """
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.3'
password_encryption = 'scram-sha-256'
"""

# With TLS: trust only on the Unix socket (a directory only the cluster owner can enter),
# TCP only over TLS with SCRAM; plain TCP is rejected outright.
HBA_TLS = """# written by insights stack: TLS + scram-sha-256 over TCP, trust on the owner's socket only
local     all          all                     trust
hostssl   all          all   127.0.0.1/32      scram-sha-256
hostssl   replication  all   127.0.0.1/32      scram-sha-256
hostnossl all          all   0.0.0.0/0         reject
hostnossl replication  all   0.0.0.0/0         reject
"""

HBA = """# written by insights stack: loopback only
local   all          all                     trust
host    all          all   127.0.0.1/32      trust
host    replication  all   127.0.0.1/32      trust
"""


def uri_query(params: dict[str, str]) -> str:
    """``k=v&...`` for a postgresql:// URI, percent-encoded as libpq decodes it (a path with a
    space stays a path)."""
    return urlencode(params, safe="/", quote_via=quote)


@dataclass(frozen=True)
class PgPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "server.log"


def pgaudit_available() -> bool:
    """Debian's postgresql-15-pgaudit is installed."""
    return Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib/pgaudit.so").exists()


def pg_cron_available() -> bool:
    """Debian's postgresql-15-cron is installed (the library the server must preload)."""
    return Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib/pg_cron.so").exists()


def bin_dir(install: bool = True) -> Path:
    """Where Debian puts PostgreSQL 15's server programs; installs the package if missing."""
    candidates = [Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")]
    for cand in candidates:
        if (cand / "initdb").exists():
            return cand
    if install and proc.is_root() and shutil.which("apt-get"):
        proc.run(["apt-get", "update", "-q"], what="apt-get update", timeout=600)
        proc.run(
            ["apt-get", "install", "-y", "-q", f"postgresql-{PG_MAJOR}", "postgresql-contrib"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            what="apt-get install postgresql",
            timeout=900,
        )
        return bin_dir(install=False)
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    hint = f" (found other versions: {', '.join(found)})" if found else ""
    raise StackError(
        f"PostgreSQL {PG_MAJOR} server programs not found{hint}: "
        f"install Debian's postgresql-{PG_MAJOR} package (apt-get install postgresql)"
    )


class LocalPostgres:
    def __init__(self, settings: Settings, *, root: Path | None = None, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or settings.stack.pg_port
        self.paths = PgPaths(root or settings.stack.dir / "pg")

    @property
    def name(self) -> str:
        return self.paths.root.name

    # --- addresses -------------------------------------------------------------------
    # The CA and the passfile are the stack's, not this node's: a replica, a promoted
    # replica and a restored copy are reached with the same ones (insights/stack/tls.py).
    @property
    def tls_dir(self) -> Path:
        from insights.stack import tls

        return tls.stack_ca_dir(self.settings.stack.dir)

    @property
    def passfile(self) -> Path:
        from insights.stack import tls

        return tls.stack_passfile(self.settings.stack.dir)

    @property
    def tls(self) -> bool:
        """This cluster was made with TLS + scram (decided at init, kept for its life)."""
        return (self.tls_dir / "ca.crt").exists() and self.passfile.exists()

    def tls_params(self) -> dict[str, str]:
        """The libpq parameters a client of this stack adds: verify-full against the stack
        CA, the password from the stack's passfile. None when the stack is not TLS."""
        if not self.tls:
            return {}
        return {"sslmode": "verify-full", "sslrootcert": str(self.tls_dir / "ca.crt"), "passfile": str(self.passfile)}

    def _client_params(self) -> str:
        params = self.tls_params()
        return f"?{uri_query(params)}" if params else ""

    def dsn_for(self, dbname: str, user: str = SUPERUSER) -> str:
        """A DSN for another database or role of this server, with the stack's client
        parameters (on a TLS stack the passfile has lines for its roles only: another role
        brings its password)."""
        return f"postgresql://{quote(user, safe='')}@127.0.0.1:{self.port}/{quote(dbname, safe='')}{self._client_params()}"

    @property
    def dsn(self) -> str:
        return self.dsn_for(DATABASE)

    @property
    def admin_dsn(self) -> str:
        return self.dsn_for("postgres")

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def running_pid(self) -> int | None:
        pid_file = self.paths.data / "postmaster.pid"
        return proc.read_pid(pid_file) if pid_file.exists() else None

    # --- lifecycle -------------------------------------------------------------------
    @staticmethod
    def _user() -> pwd.struct_passwd | None:
        """initdb and postgres refuse to run as root: run them as the service user."""
        return proc.service_user() if proc.is_root() else None

    def _pg_ctl(self, *args: str, timeout: float = 90) -> None:
        proc.run(
            [str(bin_dir(install=False) / "pg_ctl"), "-D", str(self.paths.data), "-l", str(self.paths.log), *args],
            user=self._user(),
            what=f"pg_ctl {args[-1]}",
            timeout=timeout,
        )

    def up(self) -> str:
        """Idempotent: init if needed, start if stopped, wait for ``SELECT 1``."""
        if self.running_pid() and self.answers():
            return "already running"
        binaries = bin_dir()
        user = self._user()
        initialised = self._init(binaries, user)
        proc.require_port_free(self.port, "PostgreSQL", "INSIGHTS_STACK_PG_PORT")
        self.paths.socket_dir.mkdir(parents=True, exist_ok=True)
        if user:
            proc.chown_tree(self.paths.root, user)
        if self.tls:  # trust on the socket: only the cluster owner (and root) may enter its directory
            self.paths.socket_dir.chmod(0o700)
        self._pg_ctl("-o", f"-p {self.port}", "-w", "-t", "60", "start")
        # a standby has the primary's roles and cannot write them
        if self.tls and not (self.paths.data / "standby.signal").exists():
            self._set_password()
        if not proc.wait_for(self.answers, 30):
            raise StackError(f"PostgreSQL started but does not answer; see {self.paths.log}")
        self._ensure_database()
        return "initialised and started" if initialised else "started"

    def down(self, mode: str = "fast") -> str:
        """Stop the server; ``fast`` on a primary first sends its WAL to connected standbys."""
        if not self.running_pid():
            return "not running"
        self._pg_ctl("-m", mode, "-w", "stop")
        return "stopped"

    def in_recovery(self) -> bool | None:
        """True on a standby, False on a primary, None when the server does not answer."""
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error:
            return None
        return bool(row and row[0])

    def restart(self) -> None:
        """Fast restart: every client connection is cut (tests prove consumers ride through it)."""
        self._pg_ctl("-m", "fast", "-w", "restart", timeout=120)

    def _init(self, binaries: Path, user: pwd.struct_passwd | None) -> bool:
        if (self.paths.data / "PG_VERSION").exists():
            return False
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if user:
            # the service user must reach the data directory through the repo path
            proc.chown_tree(self.paths.root, user)
        proc.run(
            [
                str(binaries / "initdb"),
                "-D", str(self.paths.data),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            user=user,
            what="initdb",
        )
        conf = SERVER_CONF.format(port=self.port, socket_dir=self.paths.socket_dir, random_page_cost=RANDOM_PAGE_COST)
        preload = [name for name, ok in (("pg_cron", pg_cron_available()), ("pgaudit", pgaudit_available())) if ok]
        if preload:
            conf += f"\nshared_preload_libraries = '{','.join(preload)}'\n"
        if "pg_cron" in preload:
            conf += CRON_CONF.format(database=DATABASE, socket_dir=self.paths.socket_dir)
        if "pgaudit" in preload:
            conf += AUDIT_CONF
        hba = HBA
        if self.settings.stack.pg_tls:
            conf += self._init_tls(binaries, user)
            hba = HBA_TLS
        with open(self.paths.data / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write(conf)
        (self.paths.data / "pg_hba.conf").write_text(hba, encoding="utf-8")
        if user:
            proc.chown_tree(self.paths.root, user)
        return True

    def _init_tls(self, binaries: Path, user: pwd.struct_passwd | None) -> str:
        """CA + server certificate, a generated superuser password in the passfile; the
        server's TLS lines."""
        from insights.stack import tls

        crt, key = tls.issue(self.tls_dir, "postgres")
        shutil.copy(crt, self.paths.data / "server.crt")
        shutil.copy(key, self.paths.data / "server.key")
        (self.paths.data / "server.key").chmod(0o600)
        # the superuser's password: generated here, set once the server runs (_set_password)
        tls.write_passfile(self.passfile, {SUPERUSER: tls.new_password()})
        return TLS_CONF

    def _set_password(self) -> None:
        """The passfile's superuser password, as a SCRAM verifier computed by libpq, through
        the owner's Unix socket (trust there): idempotent, so each start re-asserts it."""
        from insights.stack import tls

        password = tls.read_passfile(self.passfile)[SUPERUSER]
        # for any port (a stack made before had the primary's port only): replicas, a
        # promoted one, restored copies and PgBouncer listen on others
        tls.write_passfile(self.passfile, {SUPERUSER: password})
        with psycopg.connect(host=str(self.paths.socket_dir), port=self.port, user=SUPERUSER,
                             dbname="postgres", autocommit=True) as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), SUPERUSER.encode(), b"scram-sha-256")
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(verifier.decode("ascii"))))

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')  # constant identifier
            preloaded = conn.execute(
                "SELECT current_setting('shared_preload_libraries'), pg_is_in_recovery()").fetchone()
            # a standby has the primary's roles and settings already, and cannot write them
            if preloaded and "pgaudit" in preloaded[0] and not preloaded[1]:
                # the admin role's writes are audited too; the role is the migration's
                # (created here first when the cluster is new: the migration tolerates that)
                conn.execute(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_admin') "
                    "THEN CREATE ROLE app_admin NOLOGIN; END IF; END $$"
                )
                conn.execute(f"ALTER ROLE app_admin SET pgaudit.log = '{ADMIN_AUDIT}'")  # constant
