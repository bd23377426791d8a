"""Debian packages the stack's PostgreSQL operations need, installed when missing (as root).

``pgbackrest`` (backups and WAL archive, the seed's WAL-E is abandoned) and
``postgresql-15-cron`` (scheduled maintenance inside the server), ``postgresql-15-pgaudit``
(the audit log, docs/security.md). Each is optional for the
rest of the stack: when it cannot be installed, ``stack up`` says so in one line and the
feature that needs it reports itself unavailable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core.errors import StackError
from insights.stack import proc
from insights.stack.postgres import PG_MAJOR

#: package -> a file whose presence means it is installed
OPTIONAL = {
    "pgbackrest": Path("/usr/bin/pgbackrest"),
    f"postgresql-{PG_MAJOR}-cron": Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib/pg_cron.so"),
    f"postgresql-{PG_MAJOR}-pgaudit": Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib/pgaudit.so"),
}


def missing() -> list[str]:
    return [name for name, marker in OPTIONAL.items() if not marker.exists()]


def ensure_optional() -> dict[str, str]:
    """Install what is missing; returns package -> what happened (never raises)."""
    todo = missing()
    if not todo:
        return {}
    if not (proc.is_root() and shutil.which("apt-get")):
        return {name: f"missing (install Debian's {name} as root)" for name in todo}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", *todo]
    try:
        try:
            proc.run(cmd, env=env, what=f"apt-get install {' '.join(todo)}", timeout=900)
        except StackError:  # stale package lists: refresh once, then try again
            proc.run(["apt-get", "update", "-q"], what="apt-get update", timeout=600)
            proc.run(cmd, env=env, what=f"apt-get install {' '.join(todo)}", timeout=900)
    except StackError as exc:
        return {name: f"not installed: {exc}" for name in todo}
    return {name: "installed" if OPTIONAL[name].exists() else "not installed" for name in todo}
