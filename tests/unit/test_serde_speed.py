"""The per-record decode stays cheap: header + one dict lookup + fastavro, nothing parsed per call.

The budget is loose on purpose (the machine is shared and 2-core): it catches a schema
parse or a full resolution sneaking into the hot path, which cost far more, not noise.
"""

from __future__ import annotations

import json
import timeit

from core.paths import REPO_ROOT
from core.events import ProductScraped
from core.settings import load_settings
from streams.serde import RecordContext, make_deserializer, make_serializer

PLAIN = load_settings(schema_registry_url=None)
EVENT = ProductScraped.model_validate(
    json.loads((REPO_ROOT / "schemas" / "avro" / "examples" / "product_scraped" / "v1.json").read_text())
)


def _per_call_us(fn, number: int = 2000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def test_decode_cost_is_within_budget_and_old_data_costs_no_more_than_new() -> None:
    deserialize = make_deserializer(PLAIN, "product_scraped")
    ctx = RecordContext("t", 0, 0)
    v1 = make_serializer(PLAIN, "product_scraped", version=1)(EVENT, ctx)
    v2 = make_serializer(PLAIN, "product_scraped")(EVENT, ctx)
    same = _per_call_us(lambda: deserialize(v2, ctx))
    upgraded = _per_call_us(lambda: deserialize(v1, ctx))
    print(f"ProductScraped decode: v2->v2 {same:.1f} us, v1->v2 {upgraded:.1f} us")
    assert same < 250, same
    # v1 -> v2 takes the appended-defaults plan, not fastavro's per-field resolution
    assert upgraded < same * 1.6 + 10, (upgraded, same)
