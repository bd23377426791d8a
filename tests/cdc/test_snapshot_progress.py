"""Item 8 of issue 10: `cdc snapshot` reports progress (rows, rate, ETA) instead of going silent."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc.snapshot import run_snapshot
from tests.cli.helpers import run_cli
from tests.fix_services import child_env

pytestmark = pytest.mark.integration


def _rows(pg: psycopg.Connection[Any], schema: str, n: int) -> None:
    products = sql.Identifier(schema, "products")
    pg.execute(sql.SQL("INSERT INTO {} (asin, title) SELECT 'S' || g, 't' || g FROM generate_series(1, %s) g")
               .format(products), (n,))
    pg.execute(sql.SQL("ANALYZE {}").format(products))


def test_run_snapshot_reports_rows_against_the_planner_estimate(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    _rows(pg, cdc_schema, 2500)
    seen: list[tuple[str, int, int | None]] = []
    result = run_snapshot(cdc_settings, ("products",), fetch_size=1000, on_progress=lambda *a: seen.append(a))
    assert result.rows["products"] == 2500
    table = f"{cdc_schema}.products"
    assert seen[0] == (table, 0, 2500)  # announced before the first row, with the estimate
    assert [done for _, done, _ in seen[1:]] == [1000, 2000, 2500]
    assert all(total is not None and total >= done for _, done, total in seen)


def test_cli_snapshot_logs_progress_when_not_a_terminal(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    _rows(pg, cdc_schema, 1200)
    done = run_cli("cdc", "snapshot", "-t", "products", "-t", "product_snapshots", env=child_env(cdc_settings),
                   timeout=240)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    products = f"cdc snapshot: {cdc_schema}.products: "
    assert f"{products}0/1,200 rows" in lines
    final = [line for line in lines if line.startswith(products) and "done in" in line]
    assert len(final) == 1 and final[0].startswith(f"{products}1,200/1,200 rows, ") and "rows/s" in final[0]
    # the empty partitioned table is reported too, and the result stays on stdout
    assert any(line.startswith(f"cdc snapshot: {cdc_schema}.product_snapshots: 0") for line in lines)
    assert "products 1200 rows" in done.stdout
