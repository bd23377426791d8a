"""A throw-away PostgreSQL cluster of the test's own, for tests that restart the server.

The shared stack's PostgreSQL serves the whole session; restarting it would disturb
other tests. Tests that must restart the server, or put PgBouncer in front of it, get
a private instance of the same local-stack server (:func:`tests.private_pg.private_postgres`,
TLS by default like a new stack) in a temporary directory on a free port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from insights.stack.postgres import LocalPostgres
from tests.private_pg import free_port, private_postgres

__all__ = ["ThrowawayCluster", "free_port", "pg_cluster"]


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
        return self.server.dsn_for(dbname)

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
    with private_postgres("insights-pg-") as server:
        yield ThrowawayCluster(server)
