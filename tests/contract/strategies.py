"""Hypothesis strategies for valid events, field by field after the models' rules."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

from core.events import (
    AlertTriggered,
    AlertType,
    Availability,
    Dimensions,
    ExtractionMethod,
    LengthUnit,
    ProductFeature,
    ProductScraped,
    Severity,
    Variation,
)

INT32 = 2**31 - 1
asins = st.from_regex(r"[A-Z0-9]{10}", fullmatch=True)
# any zone: the models normalize to UTC, and equality of aware datetimes is by instant
zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 1, 1), timezones=zones).filter(
    lambda t: t <= datetime.now(timezone.utc)
)
short = st.text(max_size=30)


def decimals(low: str, high: str) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=Decimal(low), max_value=Decimal(high), places=2, allow_nan=False, allow_infinity=False)


money = decimals("0", "99999999.99")
measures = decimals("0", "999999.99")

dimensions = st.builds(
    Dimensions,
    length=st.none() | measures,
    width=st.none() | measures,
    height=st.none() | measures,
    unit=st.sampled_from(LengthUnit),
)
variations = st.builds(Variation, asin=asins, attributes=st.dictionaries(short, short, max_size=3))
features = st.builds(
    ProductFeature,
    feature_category=st.text(min_size=1, max_size=50),
    feature_name=st.text(min_size=1, max_size=100),
    feature_value=st.none() | st.text(max_size=80),
    confidence_score=decimals("0", "1"),
    extraction_method=st.sampled_from(ExtractionMethod),
)

product_scraped = st.builds(
    ProductScraped,
    event_id=st.uuids(),
    scraped_at=times,
    asin=asins,
    marketplace=st.from_regex(r"[A-Z]{2}", fullmatch=True),
    scraper_id=st.text(min_size=1, max_size=20),
    scraper_version=st.text(min_size=1, max_size=10),
    title=st.text(max_size=500),
    brand=st.none() | st.text(max_size=100),
    category=st.none() | st.text(max_size=200),
    manufacturer=st.none() | st.text(max_size=100),
    model=st.none() | st.text(max_size=100),
    dimensions=st.none() | dimensions,
    weight=st.none() | measures,
    price=st.none() | money,
    buybox_price=st.none() | money,
    rating=st.none() | decimals("0", "5"),
    review_count=st.integers(0, INT32),
    bsr=st.dictionaries(short, st.integers(1, INT32), max_size=4),
    availability_status=st.sampled_from(Availability),
    bullet_points=st.lists(st.text(max_size=60), max_size=5),
    product_description=st.none() | st.text(max_size=200),
    images=st.lists(st.text(max_size=40), max_size=4),
    variations=st.lists(variations, max_size=3),
    features=st.lists(features, max_size=4),
    currency=st.none() | st.from_regex(r"[A-Z]{3}", fullmatch=True),
    is_prime_eligible=st.none() | st.booleans(),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)

alert_triggered = st.builds(
    AlertTriggered,
    event_id=st.uuids(),
    triggered_at=times,
    rule_id=st.none() | st.integers(1, INT32),
    alert_type=st.sampled_from(AlertType),
    target_asin=st.none() | asins,
    severity=st.sampled_from(Severity),
    title=st.text(min_size=1, max_size=200),
    message=st.text(max_size=200),
    old_value=st.none() | json_values.map(json.dumps),
    new_value=st.none() | json_values.map(json.dumps),
    change_percentage=st.none() | decimals("-999999.99", "999999.99"),
    metadata=st.dictionaries(short, short, max_size=3),
)

EVENTS = {"product_scraped": product_scraped, "alert_triggered": alert_triggered}
