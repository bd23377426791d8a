"""The specialised envelope writer produces exactly what a generic Avro writer does."""

from __future__ import annotations

import io

import fastavro
from hypothesis import given, settings as hsettings, strategies as st

from core.settings import load_settings
from streams.cdc.avro_body import encode_body
from streams.cdc.codec import envelope_schema, make_decoder, make_encoder

SCHEMA = envelope_schema(load_settings())
values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
rows = st.none() | st.dictionaries(st.text(min_size=1), values, max_size=6)


@hsettings(max_examples=200, deadline=None)
@given(
    op=st.sampled_from("cudtr"),
    before=rows,
    after=rows,
    toast=st.lists(st.text(), max_size=3),
    lsn=st.integers(0, 2**63 - 1),
    snapshot=st.booleans(),
)
def test_same_bytes_as_fastavro(op: str, before: dict | None, after: dict | None, toast: list[str], lsn: int, snapshot: bool) -> None:
    value = {
        "op": op, "before": before, "after": after, "unchanged_toast": toast, "key_columns": ["id"],
        "source": {"lsn": lsn, "commit_lsn": lsn, "xid": 5, "commit_time": 1, "schema": "s", "table": "t", "snapshot": snapshot},
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, value)
    assert encode_body(value) == buf.getvalue()


def test_encoder_round_trips_through_the_project_decoder() -> None:
    settings = load_settings()
    value = {
        "op": "c", "before": None, "after": {"asin": "B1", "price": "1.50", "n": None, "ok": True, "c": 3},
        "unchanged_toast": [], "key_columns": ["asin"],
        "source": {"lsn": 1, "commit_lsn": 2, "xid": 3, "commit_time": 4, "schema": "public", "table": "products", "snapshot": False},
    }
    decoded = make_decoder(settings)(make_encoder(settings)(value))
    assert decoded["after"] == value["after"] and decoded["op"] == "c"
