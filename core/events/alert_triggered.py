"""AlertTriggered: one alert raised by the alerting service (schemas/avro/alert_triggered/, latest)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import Field

from core.events.base import AvroModel
from core.events.enums import AlertType, Severity
from core.events.types import Asin, EventTime, JsonText, Percentage


class AlertTriggered(AvroModel):
    subject = "alert_triggered"

    event_id: UUID
    triggered_at: EventTime
    rule_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    alert_type: AlertType
    target_asin: Asin | None = None
    severity: Severity
    title: Annotated[str, Field(min_length=1, max_length=200)]
    message: str
    old_value: JsonText | None = None
    new_value: JsonText | None = None
    change_percentage: Percentage | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
