"""AlertTriggered -> one row of ``alerts`` (pure).

The event's JSON-text fields (old and new value) become jsonb documents; enum symbols
are stored in the seed's lower-case spelling (``price_change``, ``high``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from insights.events import AlertTriggered

ALERT_COLUMNS = (
    "event_id", "rule_id", "alert_type", "target_asin", "severity", "title", "message",
    "old_value", "new_value", "change_percentage", "metadata", "triggered_at",
)
ALERT_TYPES = [
    "uuid", "int4", "text", "text", "text", "text", "text",
    "jsonb", "jsonb", "numeric", "jsonb", "timestamptz",
]
_EVENT_ID = 0
_TRIGGERED_AT = ALERT_COLUMNS.index("triggered_at")


def alert_row(event: AlertTriggered) -> tuple[Any, ...]:
    return (
        event.event_id,
        event.rule_id,
        str(event.alert_type).lower(),
        event.target_asin,
        str(event.severity).lower(),
        event.title,
        event.message,
        None if event.old_value is None else json.loads(event.old_value),
        None if event.new_value is None else json.loads(event.new_value),
        event.change_percentage,
        dict(event.metadata),
        event.triggered_at,
    )


def prepare(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Decoded Avro dict -> validated model -> row (raises pydantic.ValidationError)."""
    return alert_row(AlertTriggered.from_avro(record))


def merge(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per idempotency key (event_id, triggered_at): a duplicate is the same alert."""
    seen: dict[tuple[Any, Any], tuple[Any, ...]] = {}
    for row in rows:
        seen.setdefault((row[_EVENT_ID], row[_TRIGGERED_AT]), row)
    return list(seen.values())
