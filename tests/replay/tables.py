"""Comparing tables before and after a replay: copies, EXCEPT in both directions, checksums."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

#: every table a scrape or alert event writes (alert_rules: the counters the alerts sink keeps)
EVENT_TABLES = ("products", "product_snapshots", "product_features", "alerts", "alert_rules")


def copy_tables(conn: psycopg.Connection[Any], schema: str, tables: tuple[str, ...] = EVENT_TABLES) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    for table in tables:
        conn.execute(
            sql.SQL("CREATE TABLE {}.{} AS SELECT * FROM {}").format(
                sql.Identifier(schema), sql.Identifier(table), sql.Identifier(table)
            )
        )


def only_in(conn: psycopg.Connection[Any], left: sql.Composable, right: sql.Composable) -> list[tuple[Any, ...]]:
    """Rows of ``left`` that ``right`` does not hold (a multiset difference)."""
    query = sql.SQL("SELECT * FROM {} EXCEPT ALL SELECT * FROM {}").format(left, right)
    return conn.execute(query).fetchall()


def checksum(conn: psycopg.Connection[Any], relation: sql.Composable, columns: list[str] | None = None) -> tuple[int, str]:
    """(rows, md5 of every row's text in a fixed order) of ``relation`` (``columns``: only these)."""
    cols = sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))
    query = sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '') FROM (SELECT {} FROM {}) r"
    ).format(cols, relation)
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def table(name: str, schema: str | None = None) -> sql.Composable:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def columns_except(conn: psycopg.Connection[Any], name: str, *left_out: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        (name,),
    ).fetchall()
    return [r[0] for r in rows if r[0] not in left_out]
