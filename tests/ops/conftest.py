"""Private PostgreSQL clusters for the operations tests: a primary with streaming replicas.

Never the shared stack: these tests stop replicas, promote one, restore beside the primary.
Each cluster lives in a temporary directory on free ports and is made by the project's own
code (``insights/stack/replicas.py``), like ``insights stack up --replicas N`` makes it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.settings import Settings, load_settings
from insights.stack.replicas import Cluster
from tests.fix_services import child_env, unavailable

INSIGHTS = str(Path(sys.executable).with_name("insights"))


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (replica i takes base + i)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count > 65535:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports")


@dataclass
class PrivateCluster:
    root: Path
    settings: Settings
    cluster: Cluster

    def refresh(self) -> Cluster:
        self.cluster = Cluster(self.settings)
        return self.cluster

    @property
    def primary_dsn(self) -> str:
        return self.refresh().primary.dsn

    def cli(self, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [INSIGHTS, *args],
            env=child_env(self.settings, **env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


def require_ops_packages() -> None:
    from insights.stack.packages import ensure_optional, missing

    ensure_optional()
    if missing():
        unavailable(f"Debian packages missing and not installable here: {', '.join(missing())}")


@pytest.fixture(scope="module")
def make_cluster() -> Iterator[Callable[..., PrivateCluster]]:
    """Build private clusters (primary + replicas, migrated ``insights`` database); all torn down after."""
    made: list[PrivateCluster] = []

    def make(replicas: int, *, archive: bool = False, **flat: Any) -> PrivateCluster:
        from insights.db.migrations import migrate
        from insights.stack.pgbackrest import configure_local_archiving

        require_ops_packages()
        # not pytest's tmp_path: it is private to root, and PostgreSQL runs as another user
        root = Path(tempfile.mkdtemp(prefix="insights-ops-"))
        root.chmod(0o755)
        port = free_ports(1)
        base = free_ports(replicas + 1)
        settings = load_settings(
            stack_dir=root, stack_pg_port=port, stack_pg_replica_base_port=base, metrics_port=0,
            pg_dsn=f"postgresql://insights@127.0.0.1:{port}/insights", **flat,
        )
        cluster = Cluster(settings)
        made.append(PrivateCluster(root, settings, cluster))
        cluster.primary.up()
        if archive:
            configure_local_archiving(settings, cluster.primary)
        migrate(cluster.primary.dsn)
        cluster.up(replicas)
        private = made[-1]
        # the cluster's real DSNs: on a TLS cluster (stack_pg_tls, or INSIGHTS_STACK_PG_TLS
        # exported) they carry verify-full, the CA and the passfile, which the CLI
        # subprocesses (child_env) need to log in
        private.settings = settings.replace(pg_dsn=cluster.write_dsn(), pg_read_dsn=cluster.read_dsn())
        return private

    yield make
    for private in made:
        try:
            cluster = private.refresh()
            for replica in cluster.replicas():
                replica.down("immediate")  # throw-away: no shutdown checkpoint to wait for
            cluster.primary.down("immediate")
        except Exception:
            pass
        # a restored copy or a retired primary may still run under the root
        for pid_file in private.root.glob("**/postmaster.pid"):
            _stop_pid_file(pid_file)
        shutil.rmtree(private.root, ignore_errors=True)


def _stop_pid_file(pid_file: Path) -> None:
    from insights.stack import proc

    pid = proc.read_pid(pid_file)
    if pid:
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
        proc.wait_for(lambda: not proc.pid_alive(pid), 20)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value {last!r}")


def scalar(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]
