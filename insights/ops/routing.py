"""Read routing with read-your-writes, for reports that follow the writes they report on.

``INSIGHTS_PG_READ_DSN`` (a libpq multi-host DSN with ``target_session_attrs=prefer-standby``)
sends read-only work to a replica and falls back to the primary when none answers. A
replica is asynchronous: right after a write it may not have replayed it yet. Work that
must see what was just written (the demo's report after its consumers finished) asks the
primary for its WAL position, then waits until the replica has replayed that far; if the
replica does not get there in time, it reads from the primary instead.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from core.settings import Settings
from streams.pg import connect


def read_after_writes(settings: Settings, purpose: str, timeout: float = 10.0) -> psycopg.Connection[Any]:
    """A connection for reading that sees every transaction committed before this call."""
    if settings.pg.read_dsn is None:
        return connect(settings.pg, purpose)
    with connect(settings.pg, f"{purpose}-lsn", connect_timeout=5) as primary:
        row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    target = row[0] if row else "0/0"
    conn = connect(settings.pg, purpose, read_only=True)
    deadline = time.monotonic() + timeout
    while True:
        caught_up = conn.execute(
            "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
        ).fetchone()
        if caught_up and caught_up[0]:
            return conn
        if time.monotonic() > deadline:
            conn.close()
            return connect(settings.pg, purpose)  # the replica lags: the primary has it all
        time.sleep(0.05)
