"""Initial snapshot: read events for existing rows, then streaming from exactly that point."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc import slot as slots
from streams.cdc.errors import CdcError
from streams.cdc.snapshot import run_snapshot
from tests.cdc.conftest import running_reader

pytestmark = pytest.mark.integration


def test_snapshot_then_stream_neither_misses_nor_double_counts(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any
) -> None:
    products = sql.Identifier(cdc_schema, "products")
    pg.execute(
        sql.SQL("INSERT INTO {} (asin, title, weight) SELECT 'S' || g, 't' || g, g / 100.0 FROM generate_series(1, 3000) g").format(products)
    )
    # writes keep coming while the snapshot is taken
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        with psycopg.connect(cdc_settings.pg.conninfo(), autocommit=True) as conn:
            n = 0
            while not stop.is_set() and n < 200:
                n += 1
                conn.execute(sql.SQL("INSERT INTO {} (asin, title) VALUES (%s, 'live')").format(products), (f"L{n}",))
                written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = run_snapshot(cdc_settings, ("products",))
    finally:
        stop.set()
        thread.join()
    assert result.rows["products"] >= 3000

    with pytest.raises(CdcError, match="recreate-slot"):
        run_snapshot(cdc_settings, ("products",))

    with running_reader(cdc_settings):
        reader = events("products")
        reader.read(3000 + len(written), timeout=60)
        got = reader.drain()
    reads = [v for _, _, v in got if v["op"] == "r"]
    creates = [v for _, _, v in got if v["op"] == "c"]
    read_keys = {v["after"]["asin"] for v in reads}
    create_keys = {v["after"]["asin"] for v in creates}
    assert not read_keys & create_keys  # nothing counted twice
    assert read_keys | create_keys == {f"S{g}" for g in range(1, 3001)} | {f"L{n}" for n in written}
    assert all(v["source"]["snapshot"] for v in reads)
    assert {v["source"]["commit_lsn"] for v in reads} == {reads[0]["source"]["lsn"]}
    assert any(v["after"]["weight"] == "0.01" for v in reads)
    with slots.connect(cdc_settings.pg) as conn:
        assert slots.slot_exists(conn, cdc_settings.cdc.slot_name)
