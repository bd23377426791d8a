"""``insights backup full|diff|incr|info``, the retention pgBackRest applies, and its predictable
failures, on a private primary archiving through a pgBackRest stanza (issue 14, item 4).

The tests run in file order on one cluster: the chain made by the first is restored by the
second and expired (dry run) by the third.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import psycopg
from psycopg import sql
import pytest

from insights.ops.backup import PgBackRest, backups_of
from insights.ops.health import backups
from insights.stack.postgres import LocalPostgres
from tests.ops.conftest import PrivateCluster, free_ports, scalar

pytestmark = pytest.mark.integration

_chain: dict[str, Any] = {}


@pytest.fixture(scope="module")
def ops(make_cluster) -> PrivateCluster:  # type: ignore[no-untyped-def]
    private = make_cluster(0, archive=True)
    with psycopg.connect(private.primary_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE chain_probe (id int PRIMARY KEY, phase text NOT NULL,"
                     " at timestamptz NOT NULL DEFAULT clock_timestamp())")
    return private


def _insert(dsn: str, first: int, last: int, phase: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO chain_probe (id, phase) SELECT g, %s FROM generate_series(%s::int, %s::int) g",
                     (phase, first, last))


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def _one_line_failure(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_full_diff_incr_chain_is_shown_by_info_with_types_and_references(ops: PrivateCluster) -> None:
    dsn = ops.primary_dsn
    assert "full backup" in _ok(ops.cli("backup", "full", timeout=300))
    _insert(dsn, 1, 100, "after full")
    assert "diff backup" in _ok(ops.cli("backup", "diff", timeout=300))
    _insert(dsn, 101, 150, "after diff")
    assert "incr backup" in _ok(ops.cli("backup", "incr", timeout=300))

    found = backups_of(PgBackRest(ops.settings).info())
    full, diff, incr = found[-3:]
    assert (full.kind, diff.kind, incr.kind) == ("full", "diff", "incr"), found
    # the diff is against the full; the incr against the diff, and restoring it reads both
    assert diff.prior == full.label and diff.reference == (full.label,)
    assert incr.prior == diff.label and incr.reference == (full.label, diff.label)
    assert full.prior is None and full.reference == ()
    _chain.update(full=full.label, diff=diff.label, incr=incr.label)

    shown = " ".join(_ok(ops.cli("backup", "info")).split())
    assert f"diff {diff.label} based on {full.label}; a restore of it reads {full.label}" in shown
    assert f"incr {incr.label} based on {diff.label}; a restore of it reads {full.label} + {diff.label}" in shown
    assert "newest backup 0.0 h old" in shown


def test_a_restore_after_the_incr_uses_the_chain_and_holds_exactly_the_rows(ops: PrivateCluster) -> None:
    assert _chain, "the chain test must run first"
    primary = ops.refresh().primary
    _insert(primary.dsn, 151, 175, "after incr")
    time.sleep(0.5)
    target = scalar(primary.dsn, "SELECT clock_timestamp()")
    time.sleep(0.5)
    _insert(primary.dsn, 176, 300, "after T")
    with psycopg.connect(primary.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM chain_probe WHERE id <= 10")  # after T: the copy keeps them
    _ok(ops.cli("backup", "check"))  # the WAL with the commits after T reaches the repository

    into = ops.root / "restored-chain"
    port = free_ports(1)
    _ok(ops.cli("backup", "restore", "--to-time", target.isoformat(), "--into", str(into), "--port", str(port),
                timeout=300))
    copy = LocalPostgres(ops.settings, root=into, port=port)
    try:
        rows = scalar(copy.dsn, "SELECT array_agg(id ORDER BY id) FROM chain_probe")
        assert rows == list(range(1, 176))
        phases = scalar(copy.dsn, "SELECT string_agg(DISTINCT phase, ',' ORDER BY phase) FROM chain_probe")
        assert phases == "after diff,after full,after incr"
    finally:
        copy.down("immediate")
    # pgBackRest chose the incr (the newest backup before T), i.e. the full + diff + incr chain
    log = (ops.root / "pgbackrest" / "log" / f"{ops.settings.pg.backup_stanza}-restore.log").read_text()
    chosen = re.findall(r"restore backup set ([^,\s]+)", log)
    assert chosen and chosen[-1] == _chain["incr"], chosen


def test_the_configured_retention_is_what_pgbackrest_applies(ops: PrivateCluster) -> None:
    tool = PgBackRest(ops.settings)

    def current(option: str) -> str:
        # pgBackRest's own reading of the configuration it runs with (not our file's text)
        text = subprocess.run(tool.command("help", "backup", option), capture_output=True, text=True,
                              check=True).stdout
        found = re.search(r"^current: (\S+)$", text, re.M)
        return found.group(1) if found else "(default)"

    # the seed: full backups 30 days; WAL kept for every retained full backup (30 days)
    assert current("repo1-retention-full-type") == "time"
    assert current("repo1-retention-full") == "30"
    assert current("repo1-retention-archive-type") == "full"
    assert current("repo1-retention-archive") == "(default)"  # = follows the full retention

    before = [b.label for b in backups_of(tool.info())]
    assert len(before) >= 4  # the stack's first full, and the chain
    # with those settings nothing of the last 30 days goes
    kept = subprocess.run(tool.command("expire", "--dry-run", "--log-level-console=info"),
                          capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0 and "remove expired backup" not in kept.stdout + kept.stderr, kept.stdout
    assert "expire command end: completed successfully" in kept.stdout + kept.stderr, kept.stdout + kept.stderr

    # what expiring a full takes with it, by the same rules (WAL follows the fulls): with one
    # full kept (a count, instead of 30 days, on this 1-minute-old repository), every older
    # full goes with its diff and incr, and the WAL before the kept full
    _ok(ops.cli("backup", "full", timeout=300))
    newest = backups_of(tool.info())[-1].label
    dropped = subprocess.run(
        tool.command("expire", "--dry-run", "--log-level-console=info",
                     "--repo1-retention-full-type=count", "--repo1-retention-full=1"),
        capture_output=True, text=True, timeout=120,
    )
    out = dropped.stdout + dropped.stderr
    assert dropped.returncode == 0, out
    removed = re.findall(r"remove expired backup (\S+)", out)
    assert sorted(removed) == sorted(before), out  # every older full, diff and incr; not the newest
    wal = re.search(r"remove archive, start = (\w+), stop = (\w+)", out)
    newest_wal = backups_of(tool.info())[-1].wal_start
    assert wal is not None and newest_wal is not None and wal.group(2) < newest_wal, out
    # a dry run: nothing went
    assert [b.label for b in backups_of(tool.info())] == [*before, newest]


def test_predictable_failures_print_one_line_naming_the_fix(ops: PrivateCluster) -> None:
    missing = "nostanza"
    for args in (("backup", "info"), ("backup", "diff"), ("backup", "incr")):
        line = _one_line_failure(ops.cli(*args, INSIGHTS_PG_BACKUP_STANZA=missing))
        assert f"stanza {missing!r} does not exist" in line and "stanza-create" in line, line

    primary = ops.refresh().primary
    tool = PgBackRest(ops.settings)
    broken = " ".join(tool.command("archive-push", f"--repo1-path={ops.root / 'no-such-repo'}", "%p"))
    with psycopg.connect(primary.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(broken)))
        conn.execute("SELECT pg_reload_conf()")
    try:
        # pgBackRest waits archive-timeout (60 s) for the segment: 5 s here
        for args in (("backup", "check"), ("backup", "incr")):
            line = _one_line_failure(ops.cli(*args, PGBACKREST_ARCHIVE_TIMEOUT="5", timeout=120))
            assert "WAL archiving is broken" in line and tool.archive_command() in line, line
        rows = {r.what: r for r in backups(ops.settings)}
        assert rows["wal-archive"].state == "FAILING" and not rows["wal-archive"].healthy, rows
    finally:
        with psycopg.connect(primary.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(
                sql.Literal(tool.archive_command())))
            conn.execute("SELECT pg_reload_conf()")
    _ok(ops.cli("backup", "check"))  # and it works again
