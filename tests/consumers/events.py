"""Small, explicit event builders for the consumer tests (valid by construction)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.events import AlertTriggered, ProductScraped

BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def asin(n: int) -> str:
    return f"B{n:09d}"


def scrape(
    n: int,
    seq: int,
    *,
    price: str | None = None,
    rating: str = "4.20",
    title: str | None = None,
    features: int = 2,
    at: datetime | None = None,
    feature_value: str | None = None,
) -> ProductScraped:
    """Scrape number ``seq`` of product ``n``; later seq = later scraped_at.

    Feature ``i`` has the value ``value i at seq`` (a new value every scrape), or
    ``<feature_value> i`` when ``feature_value`` is given (the same in every such scrape).
    """
    when = at or BASE_TIME + timedelta(minutes=seq)
    return ProductScraped(
        event_id=uuid.UUID(int=(n << 32) | seq),
        scraped_at=when,
        asin=asin(n),
        marketplace="US",
        scraper_id="test-scraper",
        scraper_version="1.0",
        title=title or f"Product {n} as of scrape {seq}",
        brand="Acme",
        category="Electronics",
        manufacturer="Acme Inc",
        model=f"M{n}",
        dimensions={"length": Decimal("10.50"), "width": Decimal("2.00"), "height": None, "unit": "CM"},
        weight=Decimal("1.25"),
        price=Decimal(price or f"{10 + seq}.99"),
        buybox_price=Decimal(price or f"{10 + seq}.99"),
        rating=Decimal(rating),
        review_count=100 + seq,
        bsr={"Electronics": 1000 + seq},
        availability_status="IN_STOCK",
        bullet_points=["fast", "small"],
        product_description="A product.",
        images=[f"https://img.example/{n}.jpg"],
        variations=[{"asin": asin(n + 1), "attributes": {"color": "red"}}],
        features=[
            {
                "feature_category": "spec",
                "feature_name": f"f{i}",
                "feature_value": f"value {i} at {seq}" if feature_value is None else f"{feature_value} {i}",
                "confidence_score": Decimal("0.90"),
                "extraction_method": "PARSER",
            }
            for i in range(features)
        ],
        currency="USD",
        is_prime_eligible=True,
    )


def alert(rule_id: int | None, n: int, seq: int, *, target: str | None = None) -> AlertTriggered:
    return AlertTriggered(
        event_id=uuid.UUID(int=(1 << 100) | (n << 32) | seq),
        triggered_at=BASE_TIME + timedelta(minutes=seq),
        rule_id=rule_id,
        alert_type="PRICE_CHANGE",
        target_asin=target,
        severity="HIGH",
        title=f"Price dropped for {target or 'group'}",
        message="The price fell by more than 10%.",
        old_value='{"price": 20.00}',
        new_value='{"price": 17.50}',
        change_percentage=Decimal("-12.50"),
        metadata={"source": "test"},
    )


def shuffled(items: list[Any], seed: int = 7) -> list[Any]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out
