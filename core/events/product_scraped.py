"""ProductScraped: one scrape of one product page (schemas/avro/product_scraped/, latest version)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import Field

from core.events.base import AvroModel
from core.events.enums import Availability, ExtractionMethod, LengthUnit
from core.events.types import Asin, Confidence, EventTime, Marketplace, Measure, Money, Rating


class Dimensions(AvroModel):
    length: Measure | None = None
    width: Measure | None = None
    height: Measure | None = None
    unit: LengthUnit = LengthUnit.UNKNOWN


class Variation(AvroModel):
    asin: Asin
    attributes: dict[str, str] = Field(default_factory=dict)


class ProductFeature(AvroModel):
    feature_category: Annotated[str, Field(min_length=1, max_length=50)]
    feature_name: Annotated[str, Field(min_length=1, max_length=100)]
    feature_value: str | None = None
    confidence_score: Confidence = Decimal("1.00")  # the seed's column default
    extraction_method: ExtractionMethod = ExtractionMethod.UNKNOWN


class ProductScraped(AvroModel):
    subject = "product_scraped"

    event_id: UUID
    scraped_at: EventTime
    asin: Asin
    marketplace: Marketplace
    scraper_id: Annotated[str, Field(min_length=1)]
    scraper_version: Annotated[str, Field(min_length=1)]
    title: Annotated[str, Field(max_length=500)]
    brand: Annotated[str, Field(max_length=100)] | None = None
    category: Annotated[str, Field(max_length=200)] | None = None
    manufacturer: Annotated[str, Field(max_length=100)] | None = None
    model: Annotated[str, Field(max_length=100)] | None = None
    dimensions: Dimensions | None = None
    weight: Measure | None = None
    price: Money | None = None
    buybox_price: Money | None = None
    rating: Rating | None = None
    # Avro int is 32-bit, like the INTEGER column
    review_count: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    bsr: dict[str, Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(default_factory=dict)
    availability_status: Availability = Availability.UNKNOWN
    bullet_points: list[str] = Field(default_factory=list)
    product_description: str | None = None
    images: list[str] = Field(default_factory=list)
    variations: list[Variation] = Field(default_factory=list)
    features: list[ProductFeature] = Field(default_factory=list)
    # --- v2 ---
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    is_prime_eligible: bool | None = None
