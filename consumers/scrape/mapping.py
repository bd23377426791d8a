"""ProductScraped -> rows of products, product_snapshots and product_features (pure).

No I/O here: these functions turn one valid event (its decoded Avro dict) into plain
tuples (JSON columns as Python dicts and lists, serialized by the COPY) in the column order of the staging
tables (``consumers.scrape.sql``), and merge a batch so that no
statement touches the same key twice ("ON CONFLICT DO UPDATE command cannot affect
row a second time"): per key, the newest event wins, exactly as the database's own
rule does for rows already stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from core.events import Availability, ExtractionMethod, LengthUnit, ProductScraped
from core.events.fast import product_scraped_ok

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


class ScrapeRows(NamedTuple):
    """The rows one scrape produces (a NamedTuple: built once per event, cheaply)."""

    product: tuple[Any, ...]
    snapshot: tuple[Any, ...]
    features: tuple[tuple[Any, ...], ...]


def _lower(symbol: str | None) -> str | None:
    # The seed's columns spell symbols in lower case ('parser', 'in_stock'); UNKNOWN is
    # Avro's fallback for a symbol this reader does not know, i.e. no value.
    if symbol is None or symbol == "UNKNOWN":
        return None
    return str(symbol).lower()


#: enum symbol -> the column's spelling, for the symbols of the schema (others: _lower)
_LOWER: dict[str, str | None] = {
    m.value: _lower(m.value) for enum in (Availability, ExtractionMethod, LengthUnit) for m in enum
}


def _dimensions(dims: Mapping[str, Any]) -> dict[str, Any]:
    # jsonb numbers: a DECIMAL(8,2) as float prints the same digits back; absent = no key
    out: dict[str, Any] = {}
    length, width, height = dims["length"], dims["width"], dims["height"]
    if length is not None:
        out["length"] = float(length)
    if width is not None:
        out["width"] = float(width)
    if height is not None:
        out["height"] = float(height)
    unit = dims["unit"]
    unit = _LOWER[unit] if unit in _LOWER else _lower(unit)
    if unit is not None:
        out["unit"] = unit
    return out


def record_rows(r: Mapping[str, Any]) -> ScrapeRows:
    """Map one valid scrape, as a decoded Avro dict with the model's values, to its rows.

    ``r`` is either a record ``core.events.fast.product_scraped_ok`` accepted or a
    validated model's ``to_avro()``. Its lists and maps go into the rows as they are
    (nothing mutates them afterwards).
    """
    asin = r["asin"]
    title = r["title"]
    at = r["scraped_at"]
    dims = r["dimensions"]
    product = (
        asin, title, r["brand"], r["category"], r["manufacturer"], r["model"],
        None if dims is None else _dimensions(dims), r["weight"], at,
    )
    # raw_data keeps what has no column of its own, so nothing the scraper saw is lost
    raw = {"marketplace": r["marketplace"], "scraper_id": r["scraper_id"], "scraper_version": r["scraper_version"]}
    currency = r["currency"]
    if currency is not None:
        raw["currency"] = currency
    prime = r["is_prime_eligible"]
    if prime is not None:
        raw["is_prime_eligible"] = prime
    status = r["availability_status"]
    # a variation is exactly {"asin", "attributes"} (the Avro record and the model agree)
    snapshot = (
        r["event_id"], asin, title, r["price"], r["buybox_price"], r["rating"],
        r["review_count"], r["bsr"], _LOWER[status] if status in _LOWER else _lower(status),
        r["bullet_points"], r["product_description"], r["images"], r["variations"], at, raw,
    )
    features = tuple([
        (
            asin, f["feature_category"], f["feature_name"], f["feature_value"], f["confidence_score"], at,
            _LOWER[m] if (m := f["extraction_method"]) in _LOWER else _lower(m),
        )
        for f in r["features"]
    ])
    return ScrapeRows(product, snapshot, features)


def scrape_rows(event: ProductScraped) -> ScrapeRows:
    """Map one validated scrape (the model) to its rows."""
    return record_rows(event.to_avro())


def prepare(record: Mapping[str, Any]) -> ScrapeRows:
    """Decoded Avro dict -> rows (raises pydantic.ValidationError on an invalid record).

    The common case, a record the cheap check accepts as the model would, skips the
    model; anything else (invalid, or merely unusual) goes through
    ``ProductScraped.from_avro``, so a dead letter carries pydantic's own message.
    """
    if product_scraped_ok(record):
        return record_rows(record)
    return record_rows(ProductScraped.from_avro(record).to_avro())


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
