"""Read routing beyond ``db stats`` (issue 14, item 2): ``status``, ``summaries status`` and the
demo's report read on a replica, fall back to the primary when the replicas are stopped, and
writers never reach a replica.

Where a command's connections landed is read from each server's own log: every server logs
every statement with the session's ``application_name`` (``insights-<purpose>``, set by
streams/pg/connect.py), so the test sees the real backends of real ``insights`` processes.
libpq's own probe of a server it skips (prefer-standby connects to the primary, asks, and
moves on) is not work done there and is left out.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg
import pytest

from insights.demo import DemoRun
from tests.ops.conftest import PrivateCluster, wait_until

pytestmark = pytest.mark.integration

#: a statement a backend ran, by the application_name of its session (the prefix set below)
STATEMENT = re.compile(r"app=(insights-[\w.-]+) LOG:  duration: [\d.]+ ms  (?:statement|parse|bind|execute)[^:]*: (.*)")
#: what libpq itself asks each server it tries for target_session_attrs: a server that was
#: only probed (a primary skipped by prefer-standby) did no work for the command
PROBES = ("SHOW transaction_read_only", "SELECT pg_catalog.pg_is_in_recovery()")
#: read-only work and the names it connects under
READERS = {"status-read", "summaries-status", "demo-report"}


@pytest.fixture(scope="module")
def ops(make_cluster) -> PrivateCluster:  # type: ignore[no-untyped-def]
    private = make_cluster(2)
    cluster = private.refresh()
    for node in [cluster.primary, *cluster.replicas()]:
        with psycopg.connect(node.admin_dsn, autocommit=True) as conn:
            # ALTER SYSTEM writes postgresql.auto.conf, allowed on a standby too; a reload applies it
            conn.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
            conn.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a '")
            conn.execute("SELECT pg_reload_conf()")
    wait_until(lambda: all(_setting(n.admin_dsn) == "0" for n in [cluster.primary, *cluster.replicas()]),
               10, "every statement logged on every node")
    return private


def _setting(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW log_min_duration_statement").fetchone()
    return str(row[0]) if row else ""


class Logs:
    """Per node, the application names that ran statements there since the last mark."""

    def __init__(self, ops: PrivateCluster) -> None:
        cluster = ops.refresh()
        self.paths: dict[str, Path] = {"primary": cluster.primary.paths.log}
        self.paths.update({r.spec.name: r.paths.log for r in cluster.replicas()})
        self.mark()

    def mark(self) -> None:
        self.offsets = {name: path.stat().st_size for name, path in self.paths.items()}

    def statements(self) -> dict[str, list[tuple[str, str]]]:
        """Per node, (application name, statement) run there since the last mark."""
        found: dict[str, list[tuple[str, str]]] = {}
        for name, path in self.paths.items():
            with path.open("rb") as f:
                f.seek(self.offsets[name])
                text = f.read().decode("utf-8", "replace")
            # one entry per log record: a multi-line statement continues on lines without a timestamp
            entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", text)
            found[name] = [(m.group(1)[len("insights-"):], m.group(2))
                           for m in (STATEMENT.search(e.replace("\n", " ")) for e in entries) if m]
        return found

    def since(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for name, path in self.paths.items():
            with path.open("rb") as f:
                f.seek(self.offsets[name])
                text = f.read().decode("utf-8", "replace")
            found[name] = {m.group(1)[len("insights-"):] for m in STATEMENT.finditer(text)
                           if m.group(2).strip() not in PROBES}
        return found


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode in (0, 1, 2) and "Traceback" not in done.stderr, done.stderr
    return done.stdout


def _on_replicas(found: dict[str, set[str]]) -> set[str]:
    return set().union(*(apps for node, apps in found.items() if node != "primary"))


def test_status_summaries_status_and_the_demo_report_read_on_a_replica(ops: PrivateCluster) -> None:
    logs = Logs(ops)
    summaries = ops.cli("summaries", "status")
    assert summaries.returncode == 0, summaries.stderr + summaries.stdout
    _ok(ops.cli("status", "--json", timeout=120))  # Kafka may be unreachable here: rows, not the exit code
    with DemoRun(ops.settings, report=lambda _line: None)._read_conn() as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), inet_server_port(), count(*) FROM products").fetchone()
    replica_ports = {r.port for r in ops.refresh().replicas()}
    assert row is not None and row[0] is True and row[1] in replica_ports, row

    found = wait_until(lambda: (f := logs.since()) and READERS <= _on_replicas(f) and f, 10,
                       "the readers' connections in the replicas' logs")
    assert not READERS & found["primary"], found
    # status's heavier reads ran there: the summaries', the rules', the partition coverage, the offsets
    on_replica = " ".join(q for node, runs in logs.statements().items() if node != "primary"
                          for app, q in runs if app == "status-read")
    for query in ("to_regclass('summaries.product_summary')", "to_regclass('rules.firings')",
                  "to_regclass('public.partition_policy')"):
        assert query in on_replica, f"status's {query} read not on a replica"
    assert "FROM consumer_offsets" in on_replica, on_replica[-500:]
    # the demo's report asks the primary only for its WAL position (read-your-writes)
    assert "demo-report-lsn" in found["primary"], found
    # writers never reach a replica: every name seen there is a reader's
    assert _on_replicas(found) <= READERS, found


def test_writers_never_reach_a_replica(ops: PrivateCluster) -> None:
    logs = Logs(ops)
    for args in (("db", "partitions", "ensure"), ("summaries", "sweep"), ("db", "maintain")):
        done = ops.cli(*args)
        assert done.returncode == 0, f"{args}: {done.stderr}{done.stdout}"
    found = wait_until(lambda: (f := logs.since()) and f["primary"] and f, 10, "the writers in the primary's log")
    assert _on_replicas(found) == set(), found
    assert {"db", "db-maintain"} <= found["primary"], found


def test_readers_fall_back_to_the_primary_when_the_replicas_are_stopped(ops: PrivateCluster) -> None:
    cluster = ops.refresh()
    logs = Logs(ops)
    cluster.down()  # both replicas stopped
    try:
        summaries = ops.cli("summaries", "status")
        assert summaries.returncode == 0, summaries.stderr + summaries.stdout
        _ok(ops.cli("status", "--json", timeout=120))
        with DemoRun(ops.settings, report=lambda _line: None)._read_conn() as conn:
            row = conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone()
        assert row == (False, cluster.primary.port), row
        found = wait_until(lambda: (f := logs.since()) and READERS <= f["primary"] and f, 10,
                           "the readers' connections in the primary's log")
        assert READERS <= found["primary"], found
    finally:
        cluster.up(None)
    wait_until(lambda: all(_setting(r.admin_dsn) == "0" for r in ops.refresh().replicas()), 60,
               "the replicas to answer again")
