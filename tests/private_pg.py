"""A throw-away PostgreSQL server of a test's own, and DSNs that reach it.

For tests that restart, stop, reconfigure or cut their server, which the shared stack's
PostgreSQL must not suffer. The server is the local stack's own (:class:`LocalPostgres`) in
a temporary directory on a free port, so it is made as a new stack would be: with TLS and
SCRAM by default (``INSIGHTS_STACK_PG_TLS``). Its DSNs come from the server itself
(:meth:`LocalPostgres.dsn_for`): on a TLS server they carry ``sslmode=verify-full``, the
private CA and the private passfile; a DSN written by hand would be refused there.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.settings import load_settings
from insights.stack.postgres import LocalPostgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_postgres(prefix: str, **flat: Any) -> Iterator[LocalPostgres]:
    """A started private server (``flat``: more settings, e.g. ``stack_pg_tls=True``),
    stopped and deleted afterwards."""
    # not pytest's tmp_path: it is private to root, and PostgreSQL runs as another user
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    server = LocalPostgres(load_settings(stack_dir=root, stack_pg_port=free_port(), **flat))
    try:
        server.up()
        yield server
    finally:
        try:
            server.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)
