"""The consumers' cheap checks (core.events.fast) never accept what the models refuse.

For valid events (tests/contract/strategies.py, through a real Avro encode and decode)
and for the same events with one rule broken, hypothesis checks:

* fast-check accepts  =>  the pydantic model accepts, and the rows mapped straight from
  the record equal (``repr`` and all) the rows the previous, model-based mapping made;
* the model refuses   =>  fast-check refuses (so the DLQ reason is pydantic's own).

The model-based mappings of the previous commit are kept below as the reference.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consumers.alerts import mapping as alerts_mapping
from consumers.scrape import mapping as scrape_mapping
from consumers.scrape.mapping import ScrapeRows
from core.events import AlertTriggered, ProductScraped
from core.events.fast import alert_triggered_ok, product_scraped_ok
from tests.contract.helpers import repo_store
from tests.contract.strategies import alert_triggered, product_scraped

_STORE = repo_store()
_SCRAPE_SCHEMA = _STORE.subject("product_scraped").latest.parsed
_ALERT_SCHEMA = _STORE.subject("alert_triggered").latest.parsed
UTC = timezone.utc


def roundtrip(schema: Any, record: dict[str, Any]) -> dict[str, Any]:
    """What the consumer's decoder hands the sink for ``record``."""
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    out.seek(0)
    return schemaless_reader(out, schema, schema)


# --- the reference: the model-based mappings before the fast path ------------------------
def _lower(symbol: str | None) -> str | None:
    if symbol is None or symbol == "UNKNOWN":
        return None
    return str(symbol).lower()


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def reference_scrape_rows(event: ProductScraped) -> ScrapeRows:
    dims = event.dimensions
    dimensions = None
    if dims is not None:
        dimensions = {
            k: v
            for k, v in (
                ("length", _number(dims.length)),
                ("width", _number(dims.width)),
                ("height", _number(dims.height)),
                ("unit", _lower(dims.unit)),
            )
            if v is not None
        }
    product = (
        event.asin, event.title, event.brand, event.category, event.manufacturer, event.model,
        dimensions, event.weight, event.scraped_at,
    )
    raw: dict[str, Any] = {
        "marketplace": event.marketplace,
        "scraper_id": event.scraper_id,
        "scraper_version": event.scraper_version,
    }
    if event.currency is not None:
        raw["currency"] = event.currency
    if event.is_prime_eligible is not None:
        raw["is_prime_eligible"] = event.is_prime_eligible
    snapshot = (
        event.event_id, event.asin, event.title, event.price, event.buybox_price, event.rating,
        event.review_count, dict(event.bsr), _lower(event.availability_status),
        list(event.bullet_points), event.product_description, list(event.images),
        [{"asin": v.asin, "attributes": v.attributes} for v in event.variations],
        event.scraped_at, raw,
    )
    features = tuple(
        (
            event.asin, f.feature_category, f.feature_name, f.feature_value,
            f.confidence_score, event.scraped_at, _lower(f.extraction_method),
        )
        for f in event.features
    )
    return ScrapeRows(product, snapshot, features)


def reference_alert_row(event: AlertTriggered) -> tuple[Any, ...]:
    return (
        event.event_id, event.rule_id, str(event.alert_type).lower(), event.target_asin,
        str(event.severity).lower(), event.title, event.message,
        None if event.old_value is None else json.loads(event.old_value),
        None if event.new_value is None else json.loads(event.new_value),
        event.change_percentage, dict(event.metadata), event.triggered_at,
    )


def plain(value: Any) -> str:
    """repr with StrEnum members spelled as their str (the model holds members, a record str)."""
    return repr(value)


# --- one broken rule at a time ----------------------------------------------------------
Mutation = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Mutation:
    def apply(r: dict[str, Any]) -> None:
        r[key] = value() if callable(value) else value
    apply.__name__ = f"{key}={value!r}"
    return apply


def _feature(key: str, value: Any) -> Mutation:
    def apply(r: dict[str, Any]) -> None:
        r["features"] = [*r["features"], {"feature_category": "spec", "feature_name": "n", "feature_value": None,
                                          "confidence_score": Decimal("0.50"), "extraction_method": "AI", key: value}]
    apply.__name__ = f"feature.{key}={value!r}"
    return apply


def _dims(key: str, value: Any) -> Mutation:
    def apply(r: dict[str, Any]) -> None:
        r["dimensions"] = {"length": None, "width": None, "height": None, "unit": "CM", key: value}
    apply.__name__ = f"dimensions.{key}={value!r}"
    return apply


def _drop(key: str) -> Mutation:
    def apply(r: dict[str, Any]) -> None:
        del r[key]
    apply.__name__ = f"drop {key}"
    return apply


def _far_future() -> datetime:
    return datetime.now(UTC) + timedelta(hours=2)


def _near_future() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=30)  # within the allowed clock skew


COMMON_MUTATIONS: list[Mutation] = [
    _set("event_id", "not-a-uuid"),
    _set("event_id", "12345678-1234-5678-1234-567812345678"),  # a str the model coerces
    _set("title", ""),
    _set("extra_field", 1),
    _drop("title"),
]
TIME_MUTATIONS = [
    lambda key: _set(key, datetime(2025, 1, 1, 12, 0)),  # naive
    lambda key: _set(key, _far_future),
    lambda key: _set(key, _near_future),
    lambda key: _set(key, datetime(2025, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))),
    lambda key: _set(key, "2025-01-01T12:00:00Z"),
    lambda key: _set(key, 1735732800),
]

SCRAPE_MUTATIONS: list[Mutation] = COMMON_MUTATIONS + [m("scraped_at") for m in TIME_MUTATIONS] + [
    _set("rating", Decimal("7.00")),
    _set("rating", Decimal("5.01")),
    _set("rating", Decimal("5.00")),
    _set("rating", Decimal("-0.01")),
    _set("rating", Decimal("4.555")),
    _set("rating", Decimal("4.5")),
    _set("rating", Decimal("NaN")),
    _set("rating", Decimal("Infinity")),
    _set("rating", 4.2),
    _set("rating", "4.20"),
    _set("price", Decimal("-1.00")),
    _set("price", Decimal("-0.00")),
    _set("price", Decimal("100000000.00")),
    _set("price", Decimal("99999999.99")),
    _set("price", Decimal("1.001")),
    _set("price", Decimal("1E+1")),
    _set("buybox_price", Decimal("-5.00")),
    _set("weight", Decimal("-0.01")),
    _set("weight", Decimal("1000000.00")),
    _set("asin", "b08n5wrwnw"),
    _set("asin", "B08N5WRWN"),
    _set("asin", "B08N5WRWNWX"),
    _set("asin", "B08N5WRWN\n"),
    _set("asin", "B08N5-RWNW"),
    _set("asin", "B08N5WRWNＷ"),
    _set("marketplace", "usa"),
    _set("marketplace", "us"),
    _set("scraper_id", ""),
    _set("scraper_version", ""),
    _set("title", "t" * 501),
    _set("title", "t" * 500),
    _set("brand", "b" * 101),
    _set("category", "c" * 201),
    _set("manufacturer", "m" * 101),
    _set("model", "m" * 101),
    _set("review_count", -1),
    _set("review_count", 2**31),
    _set("review_count", True),
    _set("review_count", "5"),
    _set("bsr", {"Books": 0}),
    _set("bsr", {"Books": 2**31}),
    _set("bsr", {"Books": "3"}),
    _set("availability_status", "SOLD_OUT"),
    _set("availability_status", "in_stock"),
    _set("bullet_points", ["ok", 3]),
    _set("bullet_points", ("a", "b")),
    _set("images", [None]),
    _set("variations", [{"asin": "bad", "attributes": {}}]),
    _set("variations", [{"asin": "B000000001", "attributes": {"color": 1}}]),
    _set("variations", [{"asin": "B000000001"}]),
    _set("variations", [{"asin": "B000000001", "attributes": {}, "x": 1}]),
    _set("currency", "usd"),
    _set("currency", "USDX"),
    _set("is_prime_eligible", "yes"),
    _set("is_prime_eligible", 1),
    _set("dimensions", {"length": Decimal("1.00")}),
    _dims("length", Decimal("-1.00")),
    _dims("width", Decimal("1000000.00")),
    _dims("height", Decimal("1.5")),
    _dims("unit", "YARD"),
    _dims("unit", "UNKNOWN"),
    _feature("confidence_score", Decimal("1.01")),
    _feature("confidence_score", Decimal("-0.01")),
    _feature("confidence_score", Decimal("1.00")),
    _feature("confidence_score", None),
    _feature("feature_category", ""),
    _feature("feature_category", "c" * 51),
    _feature("feature_name", ""),
    _feature("feature_name", "n" * 101),
    _feature("feature_value", 3),
    _feature("extraction_method", "GUESS"),
    _feature("extra", "x"),
]

ALERT_MUTATIONS: list[Mutation] = COMMON_MUTATIONS + [m("triggered_at") for m in TIME_MUTATIONS] + [
    _set("rule_id", 0),
    _set("rule_id", 2**31),
    _set("rule_id", "7"),
    _set("alert_type", "PRICE_DROP"),
    _set("severity", "low"),
    _set("target_asin", "b08n5wrwnw"),
    _set("target_asin", "B08N5WRWN\n"),
    _set("title", "t" * 201),
    _set("title", "t" * 200),
    _set("message", None),
    _set("old_value", "{not json"),
    _set("old_value", "NaN"),
    _set("new_value", ""),
    _set("new_value", '{"price": 20.0}'),
    _set("change_percentage", Decimal("1000000.00")),
    _set("change_percentage", Decimal("-999999.99")),
    _set("change_percentage", Decimal("1.234")),
    _set("change_percentage", Decimal("NaN")),
    _set("metadata", {"k": 1}),
]


def _check_scrape(record: dict[str, Any]) -> None:
    fast = product_scraped_ok(record)
    try:
        model = ProductScraped.from_avro(record)
    except ValidationError:
        assert not fast, "the fast check accepted a record the model refuses"
        with pytest.raises(ValidationError):
            scrape_mapping.prepare(record)
        return
    reference = reference_scrape_rows(model)
    if fast:
        assert plain(scrape_mapping.record_rows(record)) == plain(reference)
    # whichever path prepare takes, the rows are the reference's
    assert plain(scrape_mapping.prepare(record)) == plain(reference)
    assert plain(scrape_mapping.scrape_rows(model)) == plain(reference)


def _check_alert(record: dict[str, Any]) -> None:
    fast = alert_triggered_ok(record)
    try:
        model = AlertTriggered.from_avro(record)
    except ValidationError:
        assert not fast, "the fast check accepted a record the model refuses"
        with pytest.raises(ValidationError):
            alerts_mapping.prepare(record)
        return
    reference = reference_alert_row(model)
    if fast:
        assert plain(alerts_mapping.record_row(record)) == plain(reference)
    assert plain(alerts_mapping.prepare(record)) == plain(reference)
    assert plain(alerts_mapping.alert_row(model)) == plain(reference)


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(event=product_scraped)
def test_a_valid_decoded_scrape_passes_the_fast_check_with_the_models_rows(event: ProductScraped) -> None:
    record = roundtrip(_SCRAPE_SCHEMA, event.to_avro())
    assert product_scraped_ok(record)
    _check_scrape(record)


@_SETTINGS
@given(event=product_scraped, mutation=st.sampled_from(SCRAPE_MUTATIONS))
def test_a_broken_scrape_never_passes_the_fast_check_when_the_model_refuses_it(
    event: ProductScraped, mutation: Mutation
) -> None:
    record = roundtrip(_SCRAPE_SCHEMA, event.to_avro())
    mutation(record)
    _check_scrape(record)


@pytest.mark.parametrize("mutation", SCRAPE_MUTATIONS, ids=lambda m: m.__name__)
def test_each_scrape_mutation_on_the_golden_example(mutation: Mutation) -> None:
    from tests.contract.helpers import EXAMPLES

    golden = ProductScraped.model_validate(json.loads((EXAMPLES / "product_scraped" / "v2.json").read_text()))
    record = roundtrip(_SCRAPE_SCHEMA, golden.to_avro())
    assert product_scraped_ok(record)
    mutation(record)
    _check_scrape(record)


@_SETTINGS
@given(event=alert_triggered)
def test_a_valid_decoded_alert_passes_the_fast_check_with_the_models_row(event: AlertTriggered) -> None:
    record = roundtrip(_ALERT_SCHEMA, event.to_avro())
    assert alert_triggered_ok(record)
    _check_alert(record)


@_SETTINGS
@given(event=alert_triggered, mutation=st.sampled_from(ALERT_MUTATIONS))
def test_a_broken_alert_never_passes_the_fast_check_when_the_model_refuses_it(
    event: AlertTriggered, mutation: Mutation
) -> None:
    record = roundtrip(_ALERT_SCHEMA, event.to_avro())
    mutation(record)
    _check_alert(record)


def test_the_dead_letter_reason_is_still_pydantics() -> None:
    from tests.contract.helpers import EXAMPLES

    golden = ProductScraped.model_validate(json.loads((EXAMPLES / "product_scraped" / "v2.json").read_text()))
    record = roundtrip(_SCRAPE_SCHEMA, golden.to_avro())
    record["rating"] = Decimal("7.00")
    with pytest.raises(ValidationError) as fast_path:
        scrape_mapping.prepare(record)
    with pytest.raises(ValidationError) as model:
        ProductScraped.from_avro(record)
    assert fast_path.value.errors() == model.value.errors()
