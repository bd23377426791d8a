"""Field types shared by the event models: the domain rules the database design implies.

Each alias carries its rule where it is declared, so every model that uses it gets the
same check: an ASIN is 10 upper-case letters or digits, money is DECIMAL(10,2) and not
negative, a rating is DECIMAL(3,2) from 0 to 5, timestamps are timezone-aware and not
in the far future. Decimals are quantized to their column's scale on the way in, so a
model always holds exactly what the Avro ``decimal`` logical type can carry.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

#: how far ahead of this machine's clock an event time may be: clock skew between a
#: scraper and us, not a date typed wrongly or a unit mix-up (ms for s)
MAX_CLOCK_SKEW = timedelta(hours=1)


def _quantizer(scale: int):
    exponent = Decimal(1).scaleb(-scale)

    def quantize(value: Decimal) -> Decimal:
        # pydantic has already refused more decimal places than `scale`, so this only pads
        return value.quantize(exponent)

    return quantize


def _not_far_future(value: datetime) -> datetime:
    if value > datetime.now(timezone.utc) + MAX_CLOCK_SKEW:
        raise ValueError(f"is more than {MAX_CLOCK_SKEW} in the future")
    # one zone everywhere: the Avro timestamp-micros reader gives UTC back
    return value.astimezone(timezone.utc)


def _json_text(value: str) -> str:
    try:
        json.loads(value)
    except ValueError as exc:
        raise ValueError(f"is not a JSON document: {exc}") from None
    return value


def decimal_type(precision: int, scale: int, *, ge: Decimal | None = None, le: Decimal | None = None):
    """A Decimal with the column's precision and scale, padded to that scale."""
    return Annotated[
        Decimal,
        Field(max_digits=precision, decimal_places=scale, ge=ge, le=le, allow_inf_nan=False),
        AfterValidator(_quantizer(scale)),
    ]


Asin = Annotated[str, Field(pattern=r"^[A-Z0-9]{10}$")]
Marketplace = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
EventTime = Annotated[AwareDatetime, AfterValidator(_not_far_future)]
#: DECIMAL(10,2) >= 0: product_snapshots.price, buybox_price
Money = decimal_type(10, 2, ge=Decimal(0))
#: DECIMAL(3,2) in [0, 5]: product_snapshots.rating (the seed's CHECK)
Rating = decimal_type(3, 2, ge=Decimal(0), le=Decimal(5))
#: DECIMAL(3,2) in [0, 1]: product_features.confidence_score
Confidence = decimal_type(3, 2, ge=Decimal(0), le=Decimal(1))
#: DECIMAL(8,2) >= 0: products.weight and the dimensions
Measure = decimal_type(8, 2, ge=Decimal(0))
#: DECIMAL(8,2), signed: alerts.change_percentage
Percentage = decimal_type(8, 2)
JsonText = Annotated[str, AfterValidator(_json_text)]
