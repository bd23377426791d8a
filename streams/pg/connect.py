"""The one place a PostgreSQL connection is opened.

Every connection names its purpose in ``application_name`` (``insights-<purpose>``), so
``pg_stat_activity`` tells an operator at a glance which process holds what. The
defaults suit every client of the project:

* ``prepare_threshold=None``: no server-side prepared statements, which a
  transaction-pooling PgBouncer cannot route;
* ``connect_timeout=10``: a server that does not answer is an error, not a hang.

``read_only=True`` connects through ``INSIGHTS_PG_READ_DSN`` (a replica first, the
primary when none answers; see :meth:`PostgresSettings.read_conninfo`): for work that
only reads and tolerates the replica's lag (status, statistics, reports).
"""

from __future__ import annotations

from typing import Any

import psycopg

from core.settings import PostgresSettings

DEFAULT_CONNECT_TIMEOUT_S = 10


def application_name(purpose: str) -> str:
    return f"insights-{purpose}"[:63]  # PostgreSQL truncates at NAMEDATALEN - 1


def connect(
    pg: PostgresSettings,
    purpose: str,
    *,
    autocommit: bool = True,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S,
    read_only: bool = False,
    **conninfo: Any,
) -> psycopg.Connection[Any]:
    """Open a connection for ``purpose`` (e.g. ``consume-scrape``, ``cdc-slot``, ``status``).

    ``conninfo`` entries (``dbname``, ``options``, ``replication``…) override the DSN's.
    """
    build = pg.read_conninfo if read_only else pg.conninfo
    return psycopg.connect(
        build(application_name=application_name(purpose), connect_timeout=connect_timeout, **conninfo),
        autocommit=autocommit,
        prepare_threshold=None,
    )
