"""Roles: each can do what it should and nothing more, also on partitions created later."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors, sql
from pydantic import SecretStr

from insights.db import partitions, roles
from insights.db.migrations import DDL_DIR
from streams.topics import CDC_TABLES
from tests.db.conftest import add_product, add_snapshot

pytestmark = pytest.mark.integration

ROLES = ("app_readonly", "app_readwrite", "app_admin", "insights_ingest", "insights_cdc")


@contextmanager
def as_role(conn: psycopg.Connection, role: str) -> Iterator[None]:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")


def denied(conn: psycopg.Connection, statement: str, params: tuple = ()) -> bool:
    try:
        with conn.transaction():
            conn.execute(statement, params)  # type: ignore[arg-type]
    except errors.InsufficientPrivilege:
        return True
    return False


def test_roles_exist_with_their_attributes_and_no_password(pg: psycopg.Connection) -> None:
    rows = {r[0]: r[1:] for r in pg.execute(
        "SELECT rolname, rolcanlogin, rolreplication, rolsuper, rolpassword IS NOT NULL "
        "FROM pg_authid WHERE rolname = ANY(%s)", (list(ROLES),)).fetchall()}
    assert set(rows) == set(ROLES)
    assert rows["insights_cdc"][:3] == (True, True, False)
    assert rows["app_readonly"][:3] == (False, False, False)
    assert not any(r[2] for r in rows.values()), "a role is superuser"
    # passwords are never set by a migration (another test may have set one via settings)
    assert not rows["app_readonly"][3] and not rows["app_readwrite"][3] and not rows["app_admin"][3]


def test_no_password_in_the_migrations() -> None:
    """The seed created app_user and readonly_user WITH PASSWORD 'secure_password'."""
    for path in DDL_DIR.glob("*.sql"):
        code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        assert not re.search(r"\bPASSWORD\b", code, re.IGNORECASE), path.name


def test_ingest_role_writes_what_consumers_write_and_nothing_else(pg: psycopg.Connection) -> None:
    pg.execute("INSERT INTO api_keys (key_id, key_hash, key_type) VALUES ('sk_1', repeat('a', 64), 'secret')")
    pg.execute("INSERT INTO alert_rules (name, rule_type, target_type, target_id, conditions) "
               "VALUES ('r', 'price_change', 'product', 'B000000001', '{}')")
    now = datetime.now(UTC)
    with as_role(pg, "insights_ingest"):
        add_product(pg)
        add_snapshot(pg, "B000000001", now)
        pg.execute("INSERT INTO product_snapshots (asin, scraped_at) VALUES ('B000000001', %s) "
                   "ON CONFLICT (asin, scraped_at) DO UPDATE SET price = EXCLUDED.price", (now,))
        pg.execute("INSERT INTO alerts (event_id, alert_type, severity, title, message) "
                   "VALUES (%s, 'x', 'low', 't', 'm')", (uuid.uuid4(),))
        pg.execute("INSERT INTO consumer_offsets VALUES ('g', 't', 0, 10) "
                   "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset")
        pg.execute("UPDATE alert_rules SET trigger_count = trigger_count + 1, last_triggered_at = now()")
        assert denied(pg, "UPDATE alert_rules SET name = 'hijacked'")
        assert denied(pg, "SELECT key_hash FROM api_keys")
        assert denied(pg, "DROP TABLE product_snapshots")
        assert denied(pg, "DROP TABLE consumer_offsets")
        assert denied(pg, "DELETE FROM products")
        assert denied(pg, "TRUNCATE alerts")
        assert denied(pg, "SELECT * FROM competitive_groups")
        assert denied(pg, "CREATE TABLE sneaky (x int)")
        # it can create the partition its rows need (through the SECURITY DEFINER function)...
        made = partitions.ensure_partitions_for(pg, "product_snapshots", [datetime(2033, 5, 5, tzinfo=UTC)])
        assert len(made) == 1
        add_snapshot(pg, "B000000001", datetime(2033, 5, 5, tzinfo=UTC))
        # ...and it reaches that partition directly too, but still cannot drop it
        assert pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(made[0]))).fetchone()[0] == 1
        assert denied(pg, sql.SQL("DROP TABLE {}").format(sql.Identifier(made[0])))  # type: ignore[arg-type]
        # the partition functions meant for admins are not executable
        assert denied(pg, "SELECT * FROM split_default_partition('alerts')")


def test_grants_reach_partitions_created_later(pg: psycopg.Connection) -> None:
    """GRANT ... ON ALL TABLES (the seed) covers only the tables that exist at that moment."""
    made = partitions.ensure_partitions_for(pg, "alerts", [datetime(2034, 1, 1, tzinfo=UTC)])[0]
    target = sql.Identifier(made)
    for role in ("app_readonly", "app_readwrite", "app_admin", "insights_ingest", "insights_cdc"):
        with as_role(pg, role):
            assert not denied(pg, sql.SQL("SELECT count(*) FROM {}").format(target)), role  # type: ignore[arg-type]
    with as_role(pg, "app_readonly"):
        assert denied(pg, sql.SQL("DELETE FROM {}").format(target))  # type: ignore[arg-type]
    # a table created later by the owner is covered by the default privileges
    pg.execute("CREATE TABLE later_table (x int)")
    with as_role(pg, "app_readonly"):
        assert not denied(pg, "SELECT * FROM later_table")
        assert denied(pg, "INSERT INTO later_table VALUES (1)")


def test_readonly_reads_everything_but_key_hashes(pg: psycopg.Connection) -> None:
    with as_role(pg, "app_readonly"):
        assert not denied(pg, "SELECT key_id, rate_limit_tier FROM api_keys")
        assert denied(pg, "SELECT key_hash FROM api_keys")
        assert not denied(pg, "SELECT * FROM product_summary_view")
        assert denied(pg, "INSERT INTO products (asin, title) VALUES ('B0READONLY', 'x')")
    with as_role(pg, "app_readwrite"):
        assert not denied(pg, "SELECT key_hash FROM api_keys")
        assert denied(pg, "DROP TABLE alerts")


def test_cdc_role_reads_exactly_the_published_tables(pg: psycopg.Connection) -> None:
    readable = {r[0] for r in pg.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
        "AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND has_table_privilege('insights_cdc', c.oid, 'SELECT')").fetchall()}
    # the published tables, and cdc_schemas: the reader's own record of the typed events'
    # schema versions (ddl/0022), which holds no row of anyone's data
    assert readable == set(CDC_TABLES) | {"cdc_schemas"}
    with as_role(pg, "insights_cdc"):
        assert denied(pg, "INSERT INTO products (asin, title) VALUES ('B0CDCWRITE', 'x')")
        assert denied(pg, "DELETE FROM cdc_schemas")  # versions are appended, never rewritten


def test_passwords_come_from_settings_as_scram_verifiers(pg: psycopg.Connection) -> None:
    secret = SecretStr(f"pw-{uuid.uuid4().hex}")
    assert roles.set_passwords(pg, {"insights_cdc": None}) == []
    assert roles.set_passwords(pg, {"insights_ingest": secret}) == ["insights_ingest"]
    stored = pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'insights_ingest'").fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$") and secret.get_secret_value() not in stored
    pg.execute("ALTER ROLE insights_ingest PASSWORD NULL")  # roles are cluster-wide: leave none behind


def test_role_creation_is_idempotent_and_race_tolerant(pg_dsn: str) -> None:
    """Two databases of one cluster migrating at once both run 0014_roles.sql."""
    script = (DDL_DIR / "0014_roles.sql").read_text().split("GRANT USAGE", 1)[0]
    with psycopg.connect(pg_dsn, autocommit=True) as a, psycopg.connect(pg_dsn, autocommit=True) as b:
        a.execute(script.encode())
        b.execute(script.encode())
