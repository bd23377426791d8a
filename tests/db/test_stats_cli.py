"""``insights db stats`` and the CLI group: tables printed, errors in one line."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from typer.testing import CliRunner

from insights.cli.main import app
from insights.db.stats import reports

pytestmark = pytest.mark.integration

runner = CliRunner()


def test_stats_reports_have_rows_and_sum_partition_trees(pg: psycopg.Connection) -> None:
    got = {r.title: r for r in reports(pg)}
    connections = got["connection usage"]
    assert connections.rows[0][0] >= 1 and connections.rows[0][1] > 0
    sizes = {row[1]: row for row in got["table sizes (partition trees summed)"].rows}
    assert {"products", "product_snapshots", "api_usage_logs", "product_summary_view"} <= set(sizes)
    assert sizes["api_usage_logs"][2] > 10  # daily partitions, summed under their parent
    indexes = {row[2] for row in got["index usage (partition trees summed)"].rows}
    assert "product_snapshots_asin_scraped_at_key" in indexes
    assert not any(name.startswith("product_snapshots_20") for name in indexes)


@pytest.mark.parametrize("query", [
    # the seed's connection and index queries, verbatim
    """SELECT count(*) as active_connections, max_conn as max_connections,
              round(count(*) * 100.0 / max_conn, 2) as pct_used
       FROM pg_stat_activity,
            (SELECT setting::int as max_conn FROM pg_settings WHERE name = 'max_connections') mc""",
    """SELECT schemaname, tablename, indexname, idx_scan as index_scans,
              pg_size_pretty(pg_relation_size(indexrelid)) as index_size
       FROM pg_stat_user_indexes ORDER BY idx_scan DESC""",
], ids=["connections", "index-usage"])
def test_seed_stats_queries_do_not_run(pg: psycopg.Connection, query: str) -> None:
    with pytest.raises((errors.GroupingError, errors.UndefinedColumn)):
        pg.execute(query)


def env_for(dsn: str) -> dict[str, str]:
    return {"INSIGHTS_PG_DSN": dsn}


def test_cli_migrate_status_prune_stats_maintain(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from insights.cli.context import console

    monkeypatch.setattr(console, "width", 200)  # the console was sized at import time
    env = env_for(pg_dsn)
    result = runner.invoke(app, ["db", "migrate", "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    result = runner.invoke(app, ["db", "partitions", "status"], env=env, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "product_snapshots_default" in result.output
    result = runner.invoke(app, ["db", "partitions", "prune", "--dry-run"], env=env)
    assert result.exit_code == 0 and "0 partition(s) past their retention: nothing to drop" in result.output
    result = runner.invoke(app, ["db", "partitions", "ensure", "--months-ahead", "5"], env=env)
    assert result.exit_code == 0 and "created alerts_" in result.output
    result = runner.invoke(app, ["db", "stats"], env=env, terminal_width=200)
    assert result.exit_code == 0 and "index usage" in result.output
    result = runner.invoke(app, ["db", "maintain"], env=env, terminal_width=200)
    assert result.exit_code == 0 and "refresh summaries" in result.output


def test_cli_every_command_has_help() -> None:
    for args in (["db"], ["db", "migrate"], ["db", "partitions"], ["db", "partitions", "ensure"],
                 ["db", "partitions", "prune"], ["db", "partitions", "status"], ["db", "maintain"],
                 ["db", "stats"], ["db", "passwords"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, args
        assert "Usage" in result.output


def test_cli_error_is_one_line(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "insights"
    done = subprocess.run(
        [str(exe), "db", "stats"], capture_output=True, text=True, timeout=60,
        env={"INSIGHTS_PG_DSN": "postgresql://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("insights: error: PostgreSQL at 127.0.0.1:1 refuses connections")
    assert "INSIGHTS_PG_DSN" in lines[0] and "Traceback" not in done.stderr
