"""The domain rules the seed's tables imply, enforced by the event models."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from core.paths import REPO_ROOT
from core.events import AlertTriggered, ProductScraped

EXAMPLES = REPO_ROOT / "schemas" / "avro" / "examples"
SCRAPE = json.loads((EXAMPLES / "product_scraped" / "v2.json").read_text())
ALERT = json.loads((EXAMPLES / "alert_triggered" / "v1.json").read_text())


def scrape(**changes) -> ProductScraped:
    return ProductScraped.model_validate({**SCRAPE, **changes})


@pytest.mark.parametrize("asin", ["B08N5WRWN", "B08N5WRWNWX", "b08n5wrwnw", "B08N5-RWNW", ""])
def test_asin_is_ten_upper_case_letters_or_digits(asin: str) -> None:
    with pytest.raises(ValidationError, match="asin"):
        scrape(asin=asin)
    with pytest.raises(ValidationError, match="target_asin"):
        AlertTriggered.model_validate({**ALERT, "target_asin": asin})


@pytest.mark.parametrize("rating", ["-0.01", "5.01", "4.555", "NaN"])
def test_rating_is_between_0_and_5_with_two_decimals(rating: str) -> None:
    with pytest.raises(ValidationError, match="rating"):
        scrape(rating=rating)


def test_rating_bounds_are_inclusive_and_padded_to_scale() -> None:
    assert scrape(rating="5").rating == Decimal("5.00")
    assert str(scrape(rating=0).rating) == "0.00"


@pytest.mark.parametrize("field", ["price", "buybox_price", "weight"])
def test_prices_and_weights_are_not_negative(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        scrape(**{field: "-1.00"})


def test_price_precision_is_the_columns() -> None:
    assert scrape(price="99999999.99").price == Decimal("99999999.99")
    with pytest.raises(ValidationError, match="price"):
        scrape(price="100000000.00")  # 11 digits do not fit DECIMAL(10,2)
    with pytest.raises(ValidationError, match="price"):
        scrape(price="1.001")


def test_review_count_is_not_negative_and_fits_an_int() -> None:
    with pytest.raises(ValidationError, match="review_count"):
        scrape(review_count=-1)
    with pytest.raises(ValidationError, match="review_count"):
        scrape(review_count=2**31)


def test_timestamps_must_be_timezone_aware() -> None:
    with pytest.raises(ValidationError, match="scraped_at"):
        scrape(scraped_at="2024-01-15T14:30:00")
    with pytest.raises(ValidationError, match="triggered_at"):
        AlertTriggered.model_validate({**ALERT, "triggered_at": datetime(2024, 1, 1)})


def test_timestamps_are_normalized_to_utc() -> None:
    event = scrape(scraped_at="2024-01-15T16:30:00+02:00")
    assert event.scraped_at == datetime(2024, 1, 15, 14, 30, tzinfo=timezone.utc)
    assert event.scraped_at.utcoffset() == timedelta(0)


def test_timestamps_far_in_the_future_are_refused_but_clock_skew_is_not() -> None:
    now = datetime.now(timezone.utc)
    assert scrape(scraped_at=now + timedelta(minutes=5)).scraped_at > now
    with pytest.raises(ValidationError, match="in the future"):
        scrape(scraped_at=now + timedelta(days=2))


def test_confidence_is_between_0_and_1() -> None:
    feature = {"feature_category": "a", "feature_name": "b", "confidence_score": "1.01"}
    with pytest.raises(ValidationError, match="confidence_score"):
        scrape(features=[feature])


def test_alert_values_must_be_json_documents() -> None:
    with pytest.raises(ValidationError, match="old_value"):
        AlertTriggered.model_validate({**ALERT, "old_value": "{not json"})
    assert AlertTriggered.model_validate({**ALERT, "new_value": "3.5"}).new_value == "3.5"


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        scrape(price_usd="1.00")


def test_to_avro_and_from_avro_are_inverse() -> None:
    event = scrape()
    record = event.to_avro()
    assert record["price"] is None and record["scraped_at"].tzinfo is not None
    assert ProductScraped.from_avro(record) == event
