"""PostgreSQL fixtures: a migrated template database once per session, a fresh copy per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings, load_settings
from tests.fix_services import Services, unavailable


def dsn_for_database(admin_dsn: str, dbname: str) -> str:
    return make_conninfo(admin_dsn, dbname=dbname)


@pytest.fixture(scope="session")
def pg_admin_dsn(services: Services) -> str:
    try:
        with psycopg.connect(services.pg_admin_dsn, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL does not answer: {exc}")
    return services.pg_admin_dsn


def _migrate(dsn: str) -> None:
    """Apply ddl/ to a database (a no-op until the migrations module exists)."""
    try:
        from insights.db.migrations import migrate
    except ImportError:  # the database layer has not landed yet
        return
    migrate(dsn)


@pytest.fixture(scope="session")
def pg_template(pg_admin_dsn: str) -> Iterator[str]:
    """A database migrated once; every test's database is a copy of it."""
    name = f"tmpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        _migrate(dsn_for_database(pg_admin_dsn, name))
        yield name
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_dsn(pg_admin_dsn: str, pg_template: str) -> Iterator[str]:
    """A connection string to a fresh, migrated database of this test's own."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(pg_template))
        )
    try:
        yield dsn_for_database(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def settings(pg_dsn: str, kafka_bootstrap: str, topic_prefix: str, consumer_group: str) -> Settings:
    """Settings for one test: its own database, topic prefix and consumer group."""
    parts = conninfo_to_dict(pg_dsn)
    password = parts.pop("password", None)
    return load_settings(
        pg_dsn=make_conninfo(**parts),
        pg_password=password,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        consumer_group=consumer_group,
        metrics_port=0,
    )
