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
from psycopg.conninfo import make_conninfo

from core.settings import PostgresSettings

DEFAULT_CONNECT_TIMEOUT_S = 10


def application_name(purpose: str) -> str:
    return f"insights-{purpose}"[:63]  # PostgreSQL truncates at NAMEDATALEN - 1


def connect(
    pg: PostgresSettings | str,
    purpose: str,
    *,
    autocommit: bool = True,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S,
    read_only: bool = False,
    **conninfo: Any,
) -> psycopg.Connection[Any]:
    """Open a connection for ``purpose`` (e.g. ``consume-scrape``, ``cdc-slot``, ``status``).

    ``pg`` is the settings, or a finished connection string where a function is handed
    one (``migrate(conninfo)``: the stack's superuser, a test's own database).
    ``conninfo`` entries (``dbname``, ``options``, ``replication``…) override the DSN's.
    """
    extra = {"application_name": application_name(purpose), "connect_timeout": connect_timeout, **conninfo}
    if isinstance(pg, PostgresSettings):
        built = (pg.read_conninfo if read_only else pg.conninfo)(**extra)
    else:
        built = make_conninfo(pg, **extra)
    return psycopg.connect(
        built,
        autocommit=autocommit,
        prepare_threshold=None,
    )
