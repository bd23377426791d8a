"""Cheap checks of the event models' domain rules, for the consumers' hot path.

A consumer's record comes out of the Avro decoder, which already guarantees the
types (Decimal, aware UTC datetime, UUID, str, int, ...). Running the pydantic model
on it costs tens of microseconds per event for coercions that change nothing. The
functions here answer one question cheaply: "would the model accept this record
*and* leave every value as it is?" They return ``True`` only when

* the record has exactly the model's fields (no extra key, none missing),
* every value already has the exact type and value the model would produce (``Decimal``
  with the column's scale, ``datetime`` in ``timezone.utc``, ``UUID``, plain ``list`` and
  ``dict``), enum symbols being one of the enum's values (the model would turn them into
  ``StrEnum`` members, which compare and print as the same ``str``),
* every domain rule of ``core.events.types`` and the models holds (ASIN and
  marketplace patterns, string lengths, money/rating/measure/confidence bounds and
  digits, aware timestamps not more than ``MAX_CLOCK_SKEW`` ahead, int ranges).

``False`` means "invalid or unsure": the caller then runs the model
(``ProductScraped.from_avro``), which either accepts the record (and normalizes it) or
raises the ``ValidationError`` whose message goes to the dead-letter queue. So the
checks may be stricter than the models, never looser:
``tests/unit/test_fast_validation.py`` proves with hypothesis that a record they accept
is one the model accepts unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

from core.events.enums import AlertType, Availability, ExtractionMethod, LengthUnit, Severity
from core.events.types import MAX_CLOCK_SKEW

INT32 = 2**31 - 1
_UTC = timezone.utc

# Python's fullmatch, not `^...$`: `$` would also match before a final newline
_ASIN = re.compile(r"[A-Z0-9]{10}").fullmatch
_MARKETPLACE = re.compile(r"[A-Z]{2}").fullmatch
_CURRENCY = re.compile(r"[A-Z]{3}").fullmatch

_AVAILABILITY = frozenset(m.value for m in Availability)
_EXTRACTION = frozenset(m.value for m in ExtractionMethod)
_LENGTH_UNIT = frozenset(m.value for m in LengthUnit)
_ALERT_TYPE = frozenset(m.value for m in AlertType)
_SEVERITY = frozenset(m.value for m in Severity)

_SCRAPE_KEYS = frozenset((
    "event_id", "scraped_at", "asin", "marketplace", "scraper_id", "scraper_version", "title",
    "brand", "category", "manufacturer", "model", "dimensions", "weight", "price", "buybox_price",
    "rating", "review_count", "bsr", "availability_status", "bullet_points", "product_description",
    "images", "variations", "features", "currency", "is_prime_eligible",
))
_DIMENSION_KEYS = frozenset(("length", "width", "height", "unit"))
_VARIATION_KEYS = frozenset(("asin", "attributes"))
_FEATURE_KEYS = frozenset(("feature_category", "feature_name", "feature_value", "confidence_score", "extraction_method"))
_ALERT_KEYS = frozenset((
    "event_id", "triggered_at", "rule_id", "alert_type", "target_asin", "severity", "title", "message",
    "old_value", "new_value", "change_percentage", "metadata",
))

_ZERO = Decimal(0)
_ONE = Decimal(1)
_FIVE = Decimal(5)
# exclusive bounds of the integer part: DECIMAL(p, 2) holds |x| < 10**(p-2)
_BELOW_8_2 = Decimal(10**6)
_BELOW_10_2 = Decimal(10**8)


_CENT = Decimal("0.01")


def _decimal(value: Any, low: Decimal | None, high: Decimal | None, below: Decimal) -> bool:
    """A Decimal with exactly 2 places (the scale of every decimal here), in bounds.

    ``same_quantum`` is "same exponent", and false for NaN and infinities.
    """
    if type(value) is not Decimal or not value.same_quantum(_CENT):
        return False
    if low is not None and value < low:
        return False
    if high is not None and value > high:
        return False
    return -below < value < below


def _money(value: Any) -> bool:  # DECIMAL(10,2) >= 0
    return value is None or (type(value) is Decimal and value.same_quantum(_CENT) and _ZERO <= value < _BELOW_10_2)


def _measure(value: Any) -> bool:  # DECIMAL(8,2) >= 0
    return value is None or (type(value) is Decimal and value.same_quantum(_CENT) and _ZERO <= value < _BELOW_8_2)


def _rating(value: Any) -> bool:  # DECIMAL(3,2) in [0, 5]
    return type(value) is Decimal and value.same_quantum(_CENT) and _ZERO <= value <= _FIVE


def _event_time(value: Any, latest: datetime) -> bool:
    # timezone.utc is what the Avro timestamp-micros reader gives, and what the model's
    # validator converts to: any other zone goes through the model
    return type(value) is datetime and value.tzinfo is _UTC and value <= latest


def _str(value: Any, max_len: int) -> bool:
    return type(value) is str and len(value) <= max_len


def _opt_str(value: Any, max_len: int | None = None) -> bool:
    return value is None or (type(value) is str and (max_len is None or len(value) <= max_len))


def _symbol(value: Any, symbols: frozenset[str]) -> bool:
    return isinstance(value, str) and value in symbols


_ONLY_STR = frozenset((str,)).issuperset  # exact str, not a subclass


def _str_map(value: Any) -> bool:
    return type(value) is dict and _ONLY_STR(map(type, value)) and _ONLY_STR(map(type, value.values()))


def _str_list(value: Any) -> bool:
    return type(value) is list and _ONLY_STR(map(type, value))


def _latest() -> datetime:
    # taken before the model would take its own ``now``: a record accepted here is
    # never further ahead than the model allows
    return datetime.now(_UTC) + MAX_CLOCK_SKEW


def product_scraped_ok(r: Mapping[str, Any]) -> bool:
    """True when ``ProductScraped.from_avro(r)`` would accept ``r`` and change no value."""
    if type(r) is not dict or r.keys() != _SCRAPE_KEYS:
        return False
    asin = r["asin"]
    if not (
        type(r["event_id"]) is UUID
        and _event_time(r["scraped_at"], _latest())
        and type(asin) is str and _ASIN(asin) is not None
        and type(r["marketplace"]) is str and _MARKETPLACE(r["marketplace"]) is not None
        and type(r["scraper_id"]) is str and r["scraper_id"]
        and type(r["scraper_version"]) is str and r["scraper_version"]
        and _str(r["title"], 500)
        and _opt_str(r["brand"], 100)
        and _opt_str(r["category"], 200)
        and _opt_str(r["manufacturer"], 100)
        and _opt_str(r["model"], 100)
        and _measure(r["weight"])
        and _money(r["price"])
        and _money(r["buybox_price"])
        and (r["rating"] is None or _rating(r["rating"]))
        and type(r["review_count"]) is int and 0 <= r["review_count"] <= INT32
        and _symbol(r["availability_status"], _AVAILABILITY)
        and _str_list(r["bullet_points"])
        and _opt_str(r["product_description"])
        and _str_list(r["images"])
    ):
        return False
    currency = r["currency"]
    if currency is not None and not (type(currency) is str and _CURRENCY(currency) is not None):
        return False
    prime = r["is_prime_eligible"]
    if prime is not None and prime is not True and prime is not False:
        return False
    bsr = r["bsr"]
    if type(bsr) is not dict:
        return False
    for key, rank in bsr.items():
        if type(key) is not str or type(rank) is not int or not 1 <= rank <= INT32:
            return False
    dims = r["dimensions"]
    if dims is not None:
        if type(dims) is not dict or dims.keys() != _DIMENSION_KEYS:
            return False
        if not (_measure(dims["length"]) and _measure(dims["width"]) and _measure(dims["height"])
                and _symbol(dims["unit"], _LENGTH_UNIT)):
            return False
    variations = r["variations"]
    if type(variations) is not list:
        return False
    for v in variations:
        if type(v) is not dict or v.keys() != _VARIATION_KEYS:
            return False
        va = v["asin"]
        if type(va) is not str or _ASIN(va) is None or not _str_map(v["attributes"]):
            return False
    features = r["features"]
    if type(features) is not list:
        return False
    for f in features:
        if type(f) is not dict or f.keys() != _FEATURE_KEYS:
            return False
        category, name = f["feature_category"], f["feature_name"]
        if not (
            type(category) is str and 1 <= len(category) <= 50
            and type(name) is str and 1 <= len(name) <= 100
            and _opt_str(f["feature_value"])
            and type(score := f["confidence_score"]) is Decimal and score.same_quantum(_CENT)
            and _ZERO <= score <= _ONE
            and _symbol(f["extraction_method"], _EXTRACTION)
        ):
            return False
    return True


def _json_text(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is not str:
        return False
    try:
        json.loads(value)  # the model's own check (core.events.types._json_text)
    except ValueError:
        return False
    return True


def alert_triggered_ok(r: Mapping[str, Any]) -> bool:
    """True when ``AlertTriggered.from_avro(r)`` would accept ``r`` and change no value."""
    if type(r) is not dict or r.keys() != _ALERT_KEYS:
        return False
    rule_id, target, title, pct = r["rule_id"], r["target_asin"], r["title"], r["change_percentage"]
    return bool(
        type(r["event_id"]) is UUID
        and _event_time(r["triggered_at"], _latest())
        and (rule_id is None or (type(rule_id) is int and 1 <= rule_id <= INT32))
        and _symbol(r["alert_type"], _ALERT_TYPE)
        and (target is None or (type(target) is str and _ASIN(target) is not None))
        and _symbol(r["severity"], _SEVERITY)
        and type(title) is str and 1 <= len(title) <= 200
        and type(r["message"]) is str
        and _json_text(r["old_value"])
        and _json_text(r["new_value"])
        and (pct is None or _decimal(pct, None, None, _BELOW_8_2))
        and _str_map(r["metadata"])
    )
