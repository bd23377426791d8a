"""Tables without a primary key, and REPLICA IDENTITY FULL: every change is sent once, keyed.

The key rule (docs/cdc.md, "Record key"): the primary key when the table has one (also under
REPLICA IDENTITY FULL, which flags every column as identity on the wire); otherwise the
replica identity index's columns; otherwise every column of the row.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc.snapshot import run_snapshot
from tests.cdc.conftest import EventReader, drop_slot_when_free, running_reader

pytestmark = pytest.mark.integration

DDL = """
CREATE TABLE {s}.keyless_events (kind text NOT NULL, asin varchar(10), amount numeric(10,2));
CREATE TABLE {s}.keyless_full (kind text NOT NULL, asin varchar(10), amount numeric(10,2));
ALTER TABLE {s}.keyless_full REPLICA IDENTITY FULL;
CREATE TABLE {s}.pk_full (id bigint PRIMARY KEY, title text, amount numeric(10,2));
ALTER TABLE {s}.pk_full REPLICA IDENTITY FULL;
"""
TABLES = ["keyless_events", "keyless_full", "pk_full"]


def _settings(cdc_settings: Settings, pg: psycopg.Connection[Any], schema: str) -> Settings:
    pg.execute(sql.SQL(DDL).format(s=sql.Identifier(schema)))
    return cdc_settings.replace(cdc_tables=TABLES)


def _q(schema: str, text: str) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(schema))


def test_keyless_insert_only_table_sends_each_row_once_keyed_by_the_whole_row(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    settings = _settings(cdc_settings, pg, cdc_schema)
    with running_reader(settings):
        with pg.transaction():  # one transaction: its first row used to take another path
            pg.execute(_q(cdc_schema, "INSERT INTO {s}.keyless_events VALUES ('view', 'A1', 1.50), "
                                      "('view', 'A2', NULL), ('buy', 'A1', 9.99)"))
        pg.execute(_q(cdc_schema, "INSERT INTO {s}.keyless_events VALUES ('view', 'A3', 2.00)"))
        reader = EventReader(settings, "keyless_events")
        try:
            got = reader.read(4)
            got = reader.drain(quiet=2.0)
        finally:
            reader.close()
    assert len(got) == 4, [(k, p) for k, p, _ in got]  # once each, not once per partition
    keys = sorted((json.loads(k) for k, _, _ in got), key=json.dumps)  # partitions interleave
    assert keys == sorted([
        {"kind": "view", "asin": "A1", "amount": "1.50"},
        {"kind": "view", "asin": "A2", "amount": None},
        {"kind": "buy", "asin": "A1", "amount": "9.99"},
        {"kind": "view", "asin": "A3", "amount": "2.00"},
    ], key=json.dumps)
    assert all(v["op"] == "c" and v["key_columns"] == ["kind", "asin", "amount"] for _, _, v in got)


def test_replica_identity_full_tables_key_by_primary_key_or_whole_row_once_each(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any]
) -> None:
    settings = _settings(cdc_settings, pg, cdc_schema)
    with running_reader(settings):
        with pg.transaction():
            pg.execute(_q(cdc_schema, "INSERT INTO {s}.pk_full VALUES (1, 'one', 1.00), (2, 'two', 2.00), (3, 'three', 3.00)"))
            pg.execute(_q(cdc_schema, "INSERT INTO {s}.keyless_full VALUES ('a', 'A1', 1.00), ('b', 'A2', 2.00)"))
        pg.execute(_q(cdc_schema, "UPDATE {s}.pk_full SET title = 'uno' WHERE id = 1"))
        pg.execute(_q(cdc_schema, "DELETE FROM {s}.pk_full WHERE id = 2"))
        pg.execute(_q(cdc_schema, "UPDATE {s}.keyless_full SET amount = 5.00 WHERE kind = 'a'"))
        pg.execute(_q(cdc_schema, "DELETE FROM {s}.keyless_full WHERE kind = 'b'"))
        pk_reader, keyless_reader = EventReader(settings, "pk_full"), EventReader(settings, "keyless_full")
        try:
            pk_reader.read(5)
            pk = pk_reader.drain(quiet=2.0)
            keyless_reader.read(5)
            keyless = keyless_reader.drain(quiet=1.0)
        finally:
            pk_reader.close()
            keyless_reader.close()

    # a primary key wins over FULL's "every column is identity": one row keeps one key
    pk = sorted(pk, key=lambda e: (e[2]["source"]["commit_lsn"], e[2]["source"]["lsn"]))  # partitions interleave
    assert [(json.loads(k), v["op"]) for k, _, v in pk] == [
        ({"id": 1}, "c"), ({"id": 2}, "c"), ({"id": 3}, "c"), ({"id": 1}, "u"), ({"id": 2}, "d"),
    ]
    update, delete = pk[3][2], pk[4][2]
    assert update["before"] == {"id": 1, "title": "one", "amount": "1.00"}  # FULL sends the old row
    assert update["after"]["title"] == "uno"
    assert delete["before"] == {"id": 2, "title": "two", "amount": "2.00"}
    assert all(v["key_columns"] == ["id"] for _, _, v in pk)
    assert len({p for k, p, _ in pk if json.loads(k) == {"id": 1}}) == 1  # one partition per row

    # no primary key: the whole row is the key; an update deletes the old content's key
    keyless = sorted(keyless, key=lambda e: (e[2]["source"]["commit_lsn"], e[2]["source"]["lsn"], e[2]["op"]))
    assert [(json.loads(k), v["op"]) for k, _, v in keyless] == [
        ({"kind": "a", "asin": "A1", "amount": "1.00"}, "c"),
        ({"kind": "b", "asin": "A2", "amount": "2.00"}, "c"),
        ({"kind": "a", "asin": "A1", "amount": "1.00"}, "d"),
        ({"kind": "a", "asin": "A1", "amount": "5.00"}, "u"),
        ({"kind": "b", "asin": "A2", "amount": "2.00"}, "d"),
    ]


def test_snapshot_of_a_keyless_table_uses_the_same_key(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], pg_dsn: str
) -> None:
    settings = _settings(cdc_settings, pg, cdc_schema)
    pg.execute(_q(cdc_schema, "INSERT INTO {s}.keyless_events VALUES ('view', 'A1', 1.50), ('buy', 'A2', NULL)"))
    run_snapshot(settings, ("keyless_events",))
    reader = EventReader(settings, "keyless_events")
    try:
        got = reader.read(2)
    finally:
        reader.close()
        drop_slot_when_free(pg_dsn, settings)
    assert sorted(json.loads(k)["kind"] for k, _, _ in got) == ["buy", "view"]
    assert all(v["op"] == "r" and v["key_columns"] == ["kind", "asin", "amount"] for _, _, v in got)
