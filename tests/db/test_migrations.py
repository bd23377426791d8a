"""Migrations: from empty, a no-op the second time, dry-run changes nothing, edits refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from insights.db.errors import MigrationError
from insights.db.migrations import DDL_DIR, Migration, discover, migrate, plan

pytestmark = pytest.mark.integration

ALL = sorted(p.name for p in DDL_DIR.glob("*.sql"))


def test_migrate_from_empty_then_again_is_a_no_op(empty_dsn: str) -> None:
    assert migrate(empty_dsn) == ALL
    with psycopg.connect(empty_dsn) as conn:
        recorded = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY 1").fetchall()
        relations = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    assert [v for v, _ in recorded] == ALL
    assert all(len(c) == 64 for _, c in recorded)
    assert migrate(empty_dsn) == []
    with psycopg.connect(empty_dsn) as conn:
        # the second run created nothing: no new partition, no new table
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone()[0] == relations


def test_dry_run_prints_the_plan_and_changes_nothing(empty_dsn: str) -> None:
    assert migrate(empty_dsn, dry_run=True) == ALL
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('products')").fetchone()[0] is None


def test_a_changed_applied_migration_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    ddl = tmp_path / "ddl"
    shutil.copytree(DDL_DIR, ddl)
    migrate(empty_dsn, ddl_dir=ddl)
    target = ddl / "0006_alert_rules.sql"
    target.write_text(target.read_text() + "\n-- an innocent edit\n")
    with pytest.raises(MigrationError, match=r"0006_alert_rules\.sql changed after it was applied"):
        migrate(empty_dsn, ddl_dir=ddl)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_dsn, ddl_dir=ddl, dry_run=True)


def test_a_new_migration_is_applied_alone_and_a_failing_one_rolls_back(empty_dsn: str, tmp_path: Path) -> None:
    ddl = tmp_path / "ddl"
    shutil.copytree(DDL_DIR, ddl)
    migrate(empty_dsn, ddl_dir=ddl)
    (ddl / "0900_extra.sql").write_text("CREATE TABLE extra_a (x int);\nCREATE TABLE extra_b (y int);\n")
    assert migrate(empty_dsn, ddl_dir=ddl) == ["0900_extra.sql"]
    (ddl / "0901_broken.sql").write_text("CREATE TABLE extra_c (x int);\nSELECT no_such_function();\n")
    with pytest.raises(MigrationError, match=r"0901_broken\.sql failed"):
        migrate(empty_dsn, ddl_dir=ddl)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('extra_c')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = '0901_broken.sql'").fetchone()[0] == 0


def test_no_transaction_migrations_run_statement_by_statement(empty_dsn: str, tmp_path: Path) -> None:
    ddl = tmp_path / "ddl"
    shutil.copytree(DDL_DIR, ddl)
    (ddl / "0900_concurrent_index.sql").write_text(
        "-- insights:no-transaction\nCREATE INDEX CONCURRENTLY idx_extra_title ON products (title);\n"
    )
    assert "0900_concurrent_index.sql" in migrate(empty_dsn, ddl_dir=ddl)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('idx_extra_title')").fetchone()[0] is not None


def test_bad_file_names_and_duplicate_numbers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share the number 0001"):
        discover(tmp_path)
    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "2_Bad Name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lowercase_words.sql"):
        discover(tmp_path)


def test_plan_refuses_a_migration_that_disappeared() -> None:
    present = Migration("0001_a.sql", Path("0001_a.sql"), "SELECT 1;")
    with pytest.raises(MigrationError, match="0002_b.sql is no longer in ddl/"):
        plan({"0001_a.sql": present.checksum, "0002_b.sql": "x" * 64}, [present])
    assert plan({"0001_a.sql": present.checksum}, [present]) == []
