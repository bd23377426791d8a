"""Pydantic models of the Avro events, one per subject, field names = Avro field names."""

from core.events.alert_triggered import AlertTriggered
from core.events.base import AvroModel
from core.events.enums import AlertType, Availability, ExtractionMethod, LengthUnit, Severity
from core.events.product_scraped import Dimensions, ProductFeature, ProductScraped, Variation

#: subject folder name -> the model of its latest version
MODELS: dict[str, type[AvroModel]] = {
    "product_scraped": ProductScraped,
    "alert_triggered": AlertTriggered,
}

__all__ = [
    "MODELS",
    "AlertTriggered",
    "AlertType",
    "Availability",
    "AvroModel",
    "Dimensions",
    "ExtractionMethod",
    "LengthUnit",
    "ProductFeature",
    "ProductScraped",
    "Severity",
    "Variation",
]
