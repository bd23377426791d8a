"""Archives against the real broker and database: export a topic, replay it into a new
database; prune partitions into an archive and restore them."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.cli.helpers import run_cli
from tests.consumers.conftest import count, produce, read_topic, run_until_idle
from tests.consumers.events import alert, scrape
from tests.fix_pg import dsn_for_database
from tests.fix_services import child_env
from tests.replay.tables import EVENT_TABLES, copy_tables, only_in, table
from tests.summaries.conftest import VIEW_QUERY

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def _own_columns(conn: psycopg.Connection, name: str) -> list[str]:
    """The columns an event decides: not identities, nor those PostgreSQL fills with now()."""
    rows = conn.execute(
        """
        SELECT a.attname FROM pg_attribute a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = ''
          AND coalesce(pg_get_expr(d.adbin, d.adrelid), '') NOT LIKE '%%now()%%'
          AND a.attname NOT IN ('updated_at', 'last_updated_at')
        ORDER BY a.attnum
        """,
        (name,),
    ).fetchall()
    return [r[0] for r in rows]


def _rows(conn: psycopg.Connection, name: str, columns: list[str]) -> list[str]:
    query = sql.SQL("SELECT r::text FROM (SELECT {} FROM {}) r ORDER BY 1").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(name))
    return [r[0] for r in conn.execute(query).fetchall()]


@pytest.fixture
def fresh_database(pg_admin_dsn: str, settings):
    """A new, empty database on the shared server (migrated by the test through the CLI); dropped after."""
    name = f"archive_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = conninfo_to_dict(dsn_for_database(pg_admin_dsn, name))
    password = parts.pop("password", None)
    try:
        yield settings.replace(pg_dsn=make_conninfo(**parts), pg_password=password), dsn_for_database(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_export_then_replay_into_a_new_database(settings, topics, pg, seed_rule, fresh_database, tmp_path, make_topic):
    for rule in (1, 2):
        seed_rule(rule)
    scrapes = [scrape(n, seq) for n in range(50) for seq in range(6)]
    produce(settings, topics.scrape, "product_scraped", scrapes)
    produce(settings, topics.alerts, "alert_triggered", [alert(1 + n % 2, n, 0, target=f"B{n:09d}") for n in range(50)])
    for sink in ("scrape", "alerts"):
        run_until_idle(settings, sink, idle=3.0)
    env = child_env(settings)
    archive = tmp_path / "archive"
    out = _ok(run_cli("archive", "export", "--topic", topics.scrape, str(archive), env=env))
    assert "exported 300 record(s)" in out
    _ok(run_cli("archive", "export", "--topic", topics.alerts, str(archive), env=env))
    manifest = json.loads((archive / "manifest.json").read_text())
    assert sum(f["count"] for f in manifest["files"]) == 350
    assert {f["topic"] for f in manifest["files"]} == {topics.scrape, topics.alerts}
    assert all(len(f["sha256"]) == 64 and f["first_time"] for f in manifest["files"])
    assert "all match the manifest" in _ok(run_cli("archive", "verify", str(archive), env=env))

    # a new environment: migrate, reference data (the rules), then the events from the archive
    new_settings, new_dsn = fresh_database
    new_env = child_env(new_settings)
    _ok(run_cli("db", "migrate", env=new_env))
    with psycopg.connect(new_dsn, autocommit=True) as new:
        for rule in pg.execute("SELECT id, name, rule_type, target_type, target_id, conditions FROM alert_rules").fetchall():
            new.execute("INSERT INTO alert_rules (id, name, rule_type, target_type, target_id, conditions) "
                        "VALUES (%s, %s, %s, %s, %s, %s)", (*rule[:5], json.dumps(rule[5])))
        dry = _ok(run_cli("replay", "events", "scrape", "--from-archive", str(archive), "--topic", topics.scrape,
                          "--dry-run", env=new_env))
        assert "would replay 300 archived event(s) into scrape" in dry
        assert count(new, "SELECT count(*) FROM products") == 0
        for sink, n in (("scrape", 300), ("alerts", 50)):
            out = _ok(run_cli("replay", "events", sink, "--from-archive", str(archive), env=new_env,
                              INSIGHTS_BATCH_SIZE="64"))
            # each sink took its own events only (the archive holds both topics)
            assert f": {n} read, {n} stored" in out and "0 dead-lettered" in out and "complete" in out
        for name in EVENT_TABLES:
            cols = _own_columns(pg, name)
            assert _rows(new, name, cols) == _rows(pg, name, cols), name
        assert count(new, "SELECT count(*) FROM product_snapshots") == 300
        # the summaries as product_summary_view computes them from those tables (no CDC here)
        views = []
        for conn in (pg, new):
            conn.execute("REFRESH MATERIALIZED VIEW product_summary_view")
            views.append(conn.execute(VIEW_QUERY).fetchall())
        assert views[0] == views[1] and len(views[0]) == 50
        # again: nothing more (the replay's progress is stored in the new database)
        again = _ok(run_cli("replay", "events", "scrape", "--from-archive", str(archive), env=new_env))
        assert "replay 'scrape.archive': 0 read" in again

    # re-publish to another topic: the same bytes, the same timestamps
    other = make_topic(partitions=1)
    out = _ok(run_cli("replay", "events", "scrape", "--from-archive", str(archive), "--topic", topics.scrape,
                      "--to-topic", other, env=env))
    assert "re-published 300" in out
    copies = read_topic(settings, other, 300)
    originals = read_topic(settings, topics.scrape, 300)
    assert sorted(m.value() for m in copies) == sorted(m.value() for m in originals)
    assert sorted(m.timestamp()[1] for m in copies) == sorted(m.timestamp()[1] for m in originals)

    # a damaged file is found
    victim = archive / manifest["files"][0]["file"]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    bad = run_cli("archive", "verify", str(archive), env=env)
    assert bad.returncode == 1 and "SHA-256 differs" in bad.stdout


def test_prune_with_archive_then_restore(settings, topics, pg, tmp_path):
    months = [datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)]
    recent = datetime.now(UTC) - timedelta(days=6)  # within retention, and not in the future
    events = [scrape(n, seq, at=m + timedelta(days=seq, minutes=n)) for m in (*months, recent)
              for n in range(20) for seq in range(5)]
    produce(settings, topics.scrape, "product_scraped", events)
    run_until_idle(settings, "scrape", idle=3.0)
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 300
    copy_tables(pg, "before", ("product_snapshots",))
    env = child_env(settings)
    archive = tmp_path / "pruned"

    out = _ok(run_cli("db", "partitions", "prune", "--archive", str(archive), "--yes", env=env))
    assert out.count("archived 100 row(s)") == 2 and "2 partition(s) dropped" in out
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 100
    assert "all match the manifest" in _ok(run_cli("archive", "verify", str(archive), env=env))
    manifest = json.loads((archive / "manifest.json").read_text())
    march = next(f["partition"] for f in manifest["files"] if f["lower"].startswith("2025-03"))

    one = _ok(run_cli("archive", "restore", str(archive), "--table", "product_snapshots", "--partition", march,
                      env=env))
    assert "100 of 100 archived row(s) inserted" in one
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 200
    rest = _ok(run_cli("archive", "restore", str(archive), "--table", "product_snapshots", env=env))
    assert "100 of 100 archived row(s) inserted" in rest and "0 of 100 archived row(s) inserted" in rest
    # identical rows, ids and insert times included
    assert only_in(pg, table("product_snapshots", "before"), table("product_snapshots")) == []
    assert only_in(pg, table("product_snapshots"), table("product_snapshots", "before")) == []
    assert count(pg, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(march)).as_string(pg)) == 100
