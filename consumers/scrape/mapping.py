"""ProductScraped -> rows of products, product_snapshots and product_features (pure).

No I/O here: these functions turn one validated event into plain tuples (JSON columns
as Python dicts and lists, serialized by the COPY) in the column order of the staging
tables (``consumers.scrape.sql``), and merge a batch so that no
statement touches the same key twice ("ON CONFLICT DO UPDATE command cannot affect
row a second time"): per key, the newest event wins, exactly as the database's own
rule does for rows already stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from insights.events import ProductScraped

# Column order of each staging table (and of the tuples below).
PRODUCT_COLUMNS = (
    "asin", "title", "brand", "category", "manufacturer", "model",
    "dimensions", "weight", "last_scraped_at",
)
SNAPSHOT_COLUMNS = (
    "event_id", "asin", "title", "price", "buybox_price", "rating", "review_count",
    "bsr_data", "availability_status", "bullet_points", "product_description",
    "images", "variations", "scraped_at", "raw_data",
)
FEATURE_COLUMNS = (
    "asin", "feature_category", "feature_name", "feature_value",
    "confidence_score", "extracted_at", "extraction_method",
)

# index of the timestamp that decides "newest wins" in each tuple
_PRODUCT_TS = PRODUCT_COLUMNS.index("last_scraped_at")
_FEATURE_TS = FEATURE_COLUMNS.index("extracted_at")


@dataclass(frozen=True, slots=True)
class ScrapeRows:
    """The rows one scrape produces."""

    product: tuple[Any, ...]
    snapshot: tuple[Any, ...]
    features: tuple[tuple[Any, ...], ...]


def _number(value: Decimal | None) -> float | None:
    # jsonb numbers: a DECIMAL(8,2) as float prints the same digits back
    return None if value is None else float(value)


def _lower(symbol: str | None) -> str | None:
    # The seed's columns spell symbols in lower case ('parser', 'in_stock'); UNKNOWN is
    # Avro's fallback for a symbol this reader does not know, i.e. no value.
    if symbol is None or symbol == "UNKNOWN":
        return None
    return str(symbol).lower()


def scrape_rows(event: ProductScraped) -> ScrapeRows:
    """Map one validated scrape to its rows."""
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
    # raw_data keeps what has no column of its own, so nothing the scraper saw is lost
    raw = {
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


def prepare(record: Mapping[str, Any]) -> ScrapeRows:
    """Decoded Avro dict -> validated model -> rows (raises pydantic.ValidationError)."""
    return scrape_rows(ProductScraped.from_avro(record))


@dataclass(frozen=True)
class MergedBatch:
    products: list[tuple[Any, ...]]
    snapshots: list[tuple[Any, ...]]
    features: list[tuple[Any, ...]]


def _newest(rows: Iterable[tuple[Any, ...]], key_len: int, ts_index: int, key_start: int = 0) -> list[tuple[Any, ...]]:
    best: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        key = row[key_start:key_start + key_len]
        seen = best.get(key)
        if seen is None or row[ts_index] > seen[ts_index]:
            best[key] = row
    return list(best.values())


def merge(batch: Sequence[ScrapeRows]) -> MergedBatch:
    """One row per key for the whole batch, the newest event winning."""
    products = _newest((r.product for r in batch), 1, _PRODUCT_TS)
    # snapshot key (asin, scraped_at): a duplicate event is the same snapshot; keep the first
    snapshots: dict[tuple[str, datetime], tuple[Any, ...]] = {}
    for r in batch:
        snapshots.setdefault((r.snapshot[1], r.snapshot[13]), r.snapshot)
    features = _newest((f for r in batch for f in r.features), 3, _FEATURE_TS)
    return MergedBatch(products, list(snapshots.values()), features)
