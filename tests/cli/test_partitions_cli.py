"""Item 8 of issue 10: `db partitions prune` shows what it will drop and asks (or needs --yes);
`db partitions policy` shows and changes retention, asking when that makes data prunable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from core.settings import Settings
from insights.cli import confirm as confirm_mod
from insights.cli.main import app
from insights.db.partitions import ensure_partitions_for
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.fix_services import child_env

pytestmark = pytest.mark.integration

OLD = datetime(2019, 1, 15, tzinfo=UTC)


def _exists(pg: psycopg.Connection, name: str) -> bool:
    return pg.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def _retention(pg: psycopg.Connection, table: str) -> str | None:
    return pg.execute("SELECT retention::text FROM partition_policy WHERE parent = %s::regclass", (table,)).fetchone()[0]


def test_prune_without_a_terminal_lists_and_refuses_then_drops_with_yes(
    settings: Settings, pg: psycopg.Connection
) -> None:
    (old,) = ensure_partitions_for(pg, "product_snapshots", [OLD])
    pg.execute("INSERT INTO products (asin, title) VALUES ('B000000001', 't')")
    pg.execute("INSERT INTO product_snapshots (asin, title, scraped_at) VALUES ('B000000001', 't', %s)", (OLD,))
    env = child_env(settings)

    dry = run_cli("db", "partitions", "prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"would drop {old} [2019-01-01 00:00 .. 2019-02-01 00:00)" in dry.stdout

    refused = run_cli("db", "partitions", "prune", env=env)
    line = assert_one_line_error(refused, 2, "no partition dropped: confirmation needed", "pass --yes",
                                 after_progress=True)
    assert line.startswith("insights: error:")
    assert f"  {old} [2019-01-01 00:00 .. 2019-02-01 00:00)" in refused.stderr  # shown before refusing
    assert _exists(pg, old)

    done = run_cli("db", "partitions", "prune", "--yes", env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"dropped {old}" in done.stdout and "1 partition(s) dropped" in done.stdout
    assert "db partitions: prune: 1/1 partitions" in done.stderr  # progress, as log lines
    assert not _exists(pg, old)

    again = run_cli("db", "partitions", "prune", env=env)
    assert again.returncode == 0 and "nothing to drop" in again.stdout


def test_prune_on_a_terminal_asks_and_no_keeps_everything(
    settings: Settings, pg: psycopg.Connection, monkeypatch
) -> None:
    (old,) = ensure_partitions_for(pg, "alerts", [OLD])
    monkeypatch.setattr(confirm_mod, "stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(app, ["db", "partitions", "prune"], input="n\n", env=child_env(settings))
    assert result.exit_code == 1
    assert "Drop these 1 partition(s)" in result.output and "no partition dropped: not confirmed" in str(
        result.exception
    )
    assert _exists(pg, old)
    result = CliRunner().invoke(app, ["db", "partitions", "prune"], input="y\n", env=child_env(settings))
    assert result.exit_code == 0, result.output
    assert not _exists(pg, old)


def test_ensure_reports_its_steps(settings: Settings) -> None:
    done = run_cli("db", "partitions", "ensure", env=child_env(settings))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "db partitions: ensure: 1/8 steps, alerts: DEFAULT split"
    assert lines[-1].startswith("db partitions: ensure: 8/8 steps, ") and "done in" in lines[-1]
    assert "partition(s) created" in done.stdout


def test_policy_shows_every_table(settings: Settings) -> None:
    done = run_cli("db", "partitions", "policy", env=child_env(settings))
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") >= 5}
    assert set(rows) >= {"product_snapshots", "alerts", "api_usage_logs", "competitive_analyses"}
    assert "1 year" in rows["product_snapshots"] and "6 mons" in rows["alerts"]
    assert "forever" in rows["competitive_analyses"]


def test_policy_change_that_makes_data_prunable_asks_first(settings: Settings, pg: psycopg.Connection) -> None:
    # inside the 6-month retention today, past a 1-day one
    (recent,) = ensure_partitions_for(pg, "alerts", [datetime.now(UTC) - timedelta(days=100)])
    env = child_env(settings)

    refused = run_cli("db", "partitions", "policy", "--table", "alerts", "--retention", "1 day", env=env)
    assert_one_line_error(refused, 2, "policy unchanged: confirmation needed", after_progress=True)
    assert recent in refused.stderr
    assert _retention(pg, "alerts") == "6 mons"

    done = run_cli("db", "partitions", "policy", "--table", "alerts", "--retention", "1 day", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "alerts: retention 6 mons -> 1 day" in done.stdout
    assert _retention(pg, "alerts") == "1 day"
    assert _exists(pg, recent)  # the policy drops nothing itself; prune does

    forever = run_cli("db", "partitions", "policy", "-t", "alerts", "--retention", "none", "--premake", "5", env=env)
    assert forever.returncode == 0, forever.stderr
    assert _retention(pg, "alerts") is None
    assert pg.execute("SELECT premake FROM partition_policy WHERE parent = 'alerts'::regclass").fetchone()[0] == 5


def test_policy_rejects_a_bad_retention_and_an_unknown_table(settings: Settings, pg: psycopg.Connection) -> None:
    env = child_env(settings)
    bad = run_cli("db", "partitions", "policy", "-t", "alerts", "--retention", "soon", env=env)
    assert_one_line_error(bad, 2, "--retention 'soon':", "'12 months'")
    negative = run_cli("db", "partitions", "policy", "-t", "alerts", "--retention", "-1 day", env=env)
    assert_one_line_error(negative, 2, "must be longer than zero")
    unknown = run_cli("db", "partitions", "policy", "-t", "products", "--retention", "1 day", env=env)
    assert unknown.returncode == 2 and "Usage:" in unknown.stderr and "'products' has no partition policy" in unknown.stderr
    assert _retention(pg, "alerts") == "6 mons"
