"""Enums of the events; their symbols are the Avro enum symbols, UNKNOWN last.

UNKNOWN is each Avro enum's ``default``: a reader that meets a symbol added after it
was built reads UNKNOWN instead of failing, so adding a symbol stays compatible.
"""

from __future__ import annotations

from enum import StrEnum


class Availability(StrEnum):
    IN_STOCK = "IN_STOCK"
    LIMITED_STOCK = "LIMITED_STOCK"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    PRE_ORDER = "PRE_ORDER"
    BACK_ORDER = "BACK_ORDER"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN = "UNKNOWN"


class ExtractionMethod(StrEnum):
    PARSER = "PARSER"
    AI = "AI"
    MANUAL = "MANUAL"
    UNKNOWN = "UNKNOWN"


class LengthUnit(StrEnum):
    CM = "CM"
    MM = "MM"
    M = "M"
    IN = "IN"
    FT = "FT"
    UNKNOWN = "UNKNOWN"


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"


class AlertType(StrEnum):
    PRICE_CHANGE = "PRICE_CHANGE"
    RATING_CHANGE = "RATING_CHANGE"
    RANK_CHANGE = "RANK_CHANGE"
    STOCK_CHANGE = "STOCK_CHANGE"
    UNKNOWN = "UNKNOWN"
