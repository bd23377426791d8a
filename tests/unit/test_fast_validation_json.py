"""orjson for the scrape rows' jsonb columns stores the same documents json.dumps did."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings

from consumers.copy import fast_json_dumps
from consumers.scrape.mapping import PRODUCT_COLUMNS, SNAPSHOT_COLUMNS, scrape_rows
from consumers.scrape.sql import PRODUCT_TYPES, SNAPSHOT_TYPES
from tests.contract.strategies import product_scraped

_JSONB_SNAPSHOT = [i for i, t in enumerate(SNAPSHOT_TYPES) if t == "jsonb"]
_JSONB_PRODUCT = [i for i, t in enumerate(PRODUCT_TYPES) if t == "jsonb"]


def _same_document(value: Any) -> None:
    fast = fast_json_dumps(value)
    assert json.loads(fast) == json.loads(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(event=product_scraped)
def test_every_jsonb_value_of_a_scrape_serializes_to_the_same_document(event: Any) -> None:
    rows = scrape_rows(event)
    assert [SNAPSHOT_COLUMNS[i] for i in _JSONB_SNAPSHOT] == ["bsr_data", "images", "variations", "raw_data"]
    assert [PRODUCT_COLUMNS[i] for i in _JSONB_PRODUCT] == ["dimensions"]
    for i in _JSONB_SNAPSHOT:
        _same_document(rows.snapshot[i])
    for i in _JSONB_PRODUCT:
        _same_document(rows.product[i])


@pytest.mark.parametrize(
    "value",
    [
        {"n": 2**70},  # beyond orjson's 64-bit ints
        {"s": "lone \ud800 surrogate"},
        {1: "int key"},
        ["é", "\u0000", "\n\t\"\\"],
        {"f": 999999.99, "g": 0.01, "h": 10.5},
    ],
)
def test_what_orjson_refuses_falls_back_to_json_dumps(value: Any) -> None:
    assert fast_json_dumps(value) in (json.dumps(value), json.dumps(value).encode()) or json.loads(
        fast_json_dumps(value)
    ) == json.loads(json.dumps(value))


def test_values_json_dumps_refuses_are_still_refused() -> None:
    with pytest.raises(TypeError):
        fast_json_dumps({"d": Decimal("1.00")})
    from datetime import datetime, timezone

    with pytest.raises(TypeError):
        fast_json_dumps({"t": datetime.now(timezone.utc)})
