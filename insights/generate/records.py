"""What the simulation emits: plain, immutable records, independent of any wire format.

``insights.generate.encode`` maps them onto the Avro event models; keeping them plain
lets the simulation be tested (and reasoned about) without serialization.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class ScrapedFeature:
    category: str
    name: str
    value: str
    confidence: Decimal
    method: str  # PARSER | AI | MANUAL (the Avro symbols)
    extracted_at: datetime


@dataclass(frozen=True)
class Scrape:
    """One scrape of one product page."""

    event_id: uuid.UUID
    asin: str
    scraped_at: datetime
    #: 1, 2, 3… per product: the order a perfect delivery would have
    sequence: int
    title: str
    brand: str
    category: str
    manufacturer: str
    model: str
    dimensions: dict[str, Any]
    weight_kg: Decimal
    price: Decimal | None  # None while the page shows no offer
    buybox_price: Decimal | None
    currency: str
    rating: Decimal
    review_count: int
    bsr: dict[str, int]
    availability: str  # an Avro Availability symbol (IN_STOCK, OUT_OF_STOCK, ...)
    bullet_points: tuple[str, ...]
    description: str
    images: tuple[str, ...]
    variations: tuple[tuple[str, dict[str, str]], ...]
    features: tuple[ScrapedFeature, ...]
    prime: bool

    @property
    def key(self) -> str:
        return self.asin


@dataclass(frozen=True)
class AlertRuleDef:
    """A rule the simulated alerting service evaluates; ids are 1..K."""

    id: int
    name: str
    rule_type: str  # price_change | stock_change | rating_change | rank_change
    severity: str
    #: percentage (price, rank) or absolute stars (rating) the change must exceed
    threshold: Decimal


@dataclass(frozen=True)
class Alert:
    event_id: uuid.UUID
    rule_id: int | None
    alert_type: str
    target_asin: str | None
    severity: str
    title: str
    message: str
    old_value: Any
    new_value: Any
    change_percentage: Decimal | None
    metadata: dict[str, Any]
    triggered_at: datetime

    @property
    def key(self) -> str:
        """The target ASIN; the rule id for an alert about no single product."""
        return self.target_asin if self.target_asin is not None else f"rule-{self.rule_id}"
