"""Column include/exclude lists (the publication's column lists) and masking, per table."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc.envelope import RelationCodec, SourceInfo, change_bodies, change_events, encode_body, masking, source_txn
from streams.cdc.errors import CdcError
from streams.cdc.pgoutput import Column, Insert, Relation
from streams.cdc.reader import CdcReader
from streams.cdc.values import ValueConverter
from tests.cdc.conftest import running_reader


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_masked_columns_are_the_same_bytes_on_the_fast_and_the_reference_path() -> None:
    relation = masking(
        Relation(1, "public", "t", "d", (Column("id", 23, -1, True), Column("email", 25, -1, False),
                                          Column("n", 1700, -1, False))),
        ["email", "id"],
    )
    converter = ValueConverter()
    message = Insert(1, [b"7", b"a@b.c", b"1.50"])
    src = SourceInfo(10, 20, 3, 1_700_000_000_000_000)
    reference = change_events(converter, relation, message, src)
    fast = change_bodies(RelationCodec(relation, converter), message, 10, source_txn(20, 3, 1_700_000_000_000_000))
    assert [(e.key, encode_body(e.value)) for e in reference] == [(k, b) for _, k, b in fast]
    assert reference[0].value["after"] == {"id": _sha("7"), "email": _sha("a@b.c"), "n": "1.50"}
    assert reference[0].key == f'{{"id":"{_sha("7")}"}}'.encode()


@pytest.mark.integration
def test_excluded_columns_are_not_published_and_masked_ones_are_hashed(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any
) -> None:
    settings = cdc_settings.replace(
        cdc_exclude_columns={"products": ["description", "dimensions"]},
        cdc_include_columns={"product_snapshots": ["price"]},
        cdc_mask_columns={"products": ["brand"]},
    )
    q = lambda text: sql.SQL(text).format(s=sql.Identifier(cdc_schema))  # noqa: E731
    with running_reader(settings):
        pg.execute(q("INSERT INTO {s}.products (asin, title, brand, description) VALUES ('C1', 'Mug', 'Acme', 'secret')"))
        pg.execute(q("UPDATE {s}.products SET brand = 'Other' WHERE asin = 'C1'"))
        pg.execute(q("INSERT INTO {s}.product_snapshots (id, asin, price, rating, scraped_at) "
                     "VALUES (1, 'C1', 9.99, 4.5, '2024-01-15 10:00:00+00')"))
        products = events("products").read(2)
        snaps = events("product_snapshots").read(1)
    (_, _, created), (_, _, updated) = products
    assert "description" not in created["after"] and "dimensions" not in created["after"]
    assert created["after"]["brand"] == _sha("Acme") and updated["after"]["brand"] == _sha("Other")
    assert created["after"]["title"] == "Mug"
    # the key columns are always published
    assert set(snaps[0][2]["after"]) == {"id", "scraped_at", "price"}
    assert snaps[0][2]["after"]["price"] == "9.99"


@pytest.mark.integration
def test_excluding_a_key_column_is_refused(cdc_settings: Settings) -> None:
    settings = cdc_settings.replace(cdc_exclude_columns={"products": ["asin"]})
    with pytest.raises(CdcError, match="cannot exclude key column"):
        CdcReader(settings).setup()


@pytest.mark.integration
def test_the_full_snapshot_publishes_the_same_columns_and_masks(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any
) -> None:
    from streams.cdc.snapshot import run_snapshot

    settings = cdc_settings.replace(
        cdc_exclude_columns={"products": ["description"]}, cdc_mask_columns={"products": ["brand"]}
    )
    pg.execute(sql.SQL("INSERT INTO {}.products (asin, title, brand, description) VALUES ('S1', 'Pan', 'Acme', 'x')")
               .format(sql.Identifier(cdc_schema)))
    run_snapshot(settings, ("products",))
    (_, _, read), = events("products").read(1)
    assert read["op"] == "r" and "description" not in read["after"] and read["after"]["brand"] == _sha("Acme")
