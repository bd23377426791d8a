"""A throw-away PostgreSQL cluster of the test's own, for tests that restart the server.

The shared stack's PostgreSQL serves every engineer's tests; restarting it would break
their runs. Tests that must restart the server, or put PgBouncer in front of it, start
this one instead: initdb into a temporary directory (as the ``postgres`` OS user when
we are root), a free port, started and stopped with pg_ctl.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from insights.stack import proc
from insights.stack.postgres import bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ThrowawayCluster:
    root: Path
    port: int
    bindir: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://insights@127.0.0.1:{self.port}/postgres"

    def dsn(self, dbname: str) -> str:
        return f"postgresql://insights@127.0.0.1:{self.port}/{dbname}"

    def _user(self):  # noqa: ANN202 - pwd.struct_passwd | None
        return proc.service_user() if proc.is_root() else None

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        proc.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), *args],
            user=self._user(), what=f"pg_ctl {args[-1]}", timeout=timeout,
        )

    def init(self) -> None:
        user = self._user()
        if user:
            proc.chown_tree(self.root, user)
        proc.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "insights", "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8"],
            user=user, what="initdb",
        )
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\nmax_connections = 50\n"
                "shared_buffers = '64MB'\n"
            )

    def start(self) -> None:
        self._pg_ctl("-w", "-t", "60", "start")

    def restart(self) -> None:
        """Fast restart: every client connection is cut, as in a failover or a crash-restart."""
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "restart")

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def create_migrated_database(self, name: str) -> str:
        from insights.db.migrations import migrate

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is a test constant, not input
        dsn = self.dsn(name)
        migrate(dsn)
        return dsn


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[ThrowawayCluster]:
    root = Path(tempfile.mkdtemp(prefix="insights-pg-"))
    root.chmod(0o755)
    cluster = ThrowawayCluster(root, free_port(), bin_dir(install=False))
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
