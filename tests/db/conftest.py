"""Fixtures of the database tests: an empty database, and small row builders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
from psycopg import sql

from tests.fix_pg import dsn_for_database


@pytest.fixture
def empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A database with nothing in it (not even migrations)."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield dsn_for_database(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def add_product(conn: psycopg.Connection, asin: str = "B000000001") -> str:
    conn.execute(
        "INSERT INTO products (asin, title) VALUES (%s, %s) ON CONFLICT DO NOTHING", (asin, f"product {asin}")
    )
    return asin


def add_snapshot(conn: psycopg.Connection, asin: str, scraped_at: datetime, price: float = 10.0) -> None:
    conn.execute(
        "INSERT INTO product_snapshots (asin, scraped_at, price, rating, review_count) VALUES (%s, %s, %s, 4.5, 3)",
        (asin, scraped_at, price),
    )


def partition_of(conn: psycopg.Connection, table: str, key: str, value: object) -> str:
    """Which partition holds the row of ``table`` whose ``key`` equals ``value``."""
    row = conn.execute(
        sql.SQL("SELECT tableoid::regclass::text FROM {} WHERE {} = %s").format(
            sql.Identifier(table), sql.Identifier(key)
        ),
        (value,),
    ).fetchone()
    assert row is not None, f"no row of {table} with {key} = {value!r}"
    return row[0]
