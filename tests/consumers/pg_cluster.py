"""A throw-away PostgreSQL cluster of the test's own, for tests that restart the server.

The shared stack's PostgreSQL serves the whole session; restarting it would disturb
other tests. Tests that must restart the server, or put PgBouncer in front of it, get
a private instance of the same local-stack server (:class:`LocalPostgres`) in a
temporary directory on a free port.
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
from psycopg import sql

from core.settings import load_settings
from insights.stack.postgres import LocalPostgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ThrowawayCluster:
    server: LocalPostgres

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def admin_dsn(self) -> str:
        return self.server.admin_dsn

    def dsn(self, dbname: str) -> str:
        return f"postgresql://insights@127.0.0.1:{self.port}/{dbname}"

    def restart(self) -> None:
        """Fast restart: every client connection is cut, as in a failover or a crash-restart."""
        self.server.restart()

    def answers(self) -> bool:
        return self.server.answers()

    def create_migrated_database(self, name: str) -> str:
        from insights.db.migrations import migrate

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = self.dsn(name)
        migrate(dsn)
        return dsn


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[ThrowawayCluster]:
    # not pytest's tmp_path: it is private to root, and PostgreSQL runs as another user
    root = Path(tempfile.mkdtemp(prefix="insights-pg-"))
    root.chmod(0o755)
    server = LocalPostgres(load_settings(stack_dir=root, stack_pg_port=free_port()))
    server.up()
    try:
        yield ThrowawayCluster(server)
    finally:
        try:
            server.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)
