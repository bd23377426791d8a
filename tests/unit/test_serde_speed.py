"""The per-record decode stays cheap: header + one dict lookup + fastavro, nothing parsed per call.

Checked structurally, not with a stopwatch (timings belong to ``bench/``; on a shared
2-core machine a timed test fails on load, not on code): decoding must not parse a
schema, and a v1 record read as v2 must take the appended-defaults plan (the writer's
schema alone plus defaults) rather than fastavro's per-field resolution; with cavro
(streams/serde/native.py) good records never reach fastavro at all.
"""

from __future__ import annotations

import json

import fastavro
import pytest

import streams.serde.codec as codec
from core.events import ProductScraped
from core.paths import REPO_ROOT
from core.settings import load_settings
from streams.serde import RecordContext, make_serializer
from streams.serde.store import load_store

PLAIN = load_settings(schema_registry_url=None)
EVENT = ProductScraped.model_validate(
    json.loads((REPO_ROOT / "schemas" / "avro" / "examples" / "product_scraped" / "v1.json").read_text())
)


@pytest.mark.parametrize("native", [True, False], ids=["cavro", "fastavro"])
def test_decoding_parses_no_schema_and_old_data_takes_the_cheap_plan(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    deserialize = codec.AvroDeserializer(load_store(REPO_ROOT / "schemas" / "avro"), "product_scraped", native=native)
    ctx = RecordContext("t", 0, 0)
    v1 = make_serializer(PLAIN, "product_scraped", version=1)(EVENT, ctx)
    v2 = make_serializer(PLAIN, "product_scraped")(EVENT, ctx)

    parsed: list[object] = []
    readers: list[object] = []
    real_reader = codec.schemaless_reader

    def counting_parse(*args, **kwargs):  # any schema parse during decode is the regression
        parsed.append(args)
        return fastavro.parse_schema(*args, **kwargs)

    def recording_reader(fo, writer, reader=None, *args, **kwargs):
        readers.append(reader)
        return real_reader(fo, writer, reader, *args, **kwargs)

    monkeypatch.setattr(codec, "parse_schema", counting_parse)
    monkeypatch.setattr(codec, "schemaless_reader", recording_reader)
    for _ in range(50):
        same = deserialize(v2, ctx)
        upgraded = deserialize(v1, ctx)

    assert parsed == []
    # both paths decode with the writer schema alone: no reader schema, no resolution;
    # with cavro, fastavro is not called for a good record
    assert readers == ([] if native else [None] * 100)
    # and the appended v2 fields come back with their defaults
    assert upgraded["currency"] is None and upgraded["is_prime_eligible"] is None
    assert {k: v for k, v in upgraded.items() if k not in ("currency", "is_prime_eligible")} == {
        k: v for k, v in same.items() if k not in ("currency", "is_prime_eligible")
    }
