"""From simulation records to the Avro event records (``insights.events``) and bytes.

The mapping builds the plain dicts the Avro writer takes, without a pydantic round
trip per event: generation must keep up with benchmark loads. That every mapped
record validates against :class:`~core.events.ProductScraped` /
:class:`~core.events.AlertTriggered` is what ``tests/unit/test_generate_encode.py``
checks; :func:`scrape_model` and :func:`alert_model` give the validated models.
"""

from __future__ import annotations

import json
from typing import Any

from core.events import AlertTriggered, ProductScraped
from insights.generate.records import Alert, Scrape

MARKETPLACE = "US"
SCRAPER_VERSION = "sim-1.0"
SCRAPERS = ("scraper-a", "scraper-b", "scraper-c", "scraper-d")


def scrape_record(s: Scrape) -> dict[str, Any]:
    """The ``product_scraped`` Avro record of one scrape."""
    return {
        "event_id": s.event_id,
        "scraped_at": s.scraped_at,
        "asin": s.asin,
        "marketplace": MARKETPLACE,
        # a small fleet of scrapers takes turns on each product
        "scraper_id": SCRAPERS[s.sequence % len(SCRAPERS)],
        "scraper_version": SCRAPER_VERSION,
        "title": s.title,
        "brand": s.brand,
        "category": s.category,
        "manufacturer": s.manufacturer,
        "model": s.model,
        "dimensions": dict(s.dimensions),
        "weight": s.weight_kg,
        "price": s.price,
        "buybox_price": s.buybox_price,
        "rating": s.rating,
        "review_count": s.review_count,
        "bsr": s.bsr,
        "availability_status": s.availability,
        "bullet_points": list(s.bullet_points),
        "product_description": s.description,
        "images": list(s.images),
        "variations": [{"asin": asin, "attributes": attrs} for asin, attrs in s.variations],
        "features": [
            {
                "feature_category": f.category,
                "feature_name": f.name,
                "feature_value": f.value,
                "confidence_score": f.confidence,
                "extraction_method": f.method,
            }
            for f in s.features
        ],
        "currency": s.currency,
        "is_prime_eligible": s.prime,
    }


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def alert_record(a: Alert) -> dict[str, Any]:
    """The ``alert_triggered`` Avro record of one alert."""
    return {
        "event_id": a.event_id,
        "triggered_at": a.triggered_at,
        "rule_id": a.rule_id,
        "alert_type": a.alert_type,
        "target_asin": a.target_asin,
        "severity": a.severity,
        "title": a.title,
        "message": a.message,
        "old_value": _json(a.old_value),
        "new_value": _json(a.new_value),
        "change_percentage": a.change_percentage,
        "metadata": a.metadata,
    }


def scrape_model(s: Scrape) -> ProductScraped:
    return ProductScraped.from_avro(scrape_record(s))


def alert_model(a: Alert) -> AlertTriggered:
    return AlertTriggered.from_avro(alert_record(a))
