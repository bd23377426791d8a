"""AlertTriggered -> one row of ``alerts`` (pure).

The event's JSON-text fields (old and new value) become jsonb documents; enum symbols
are stored in the seed's lower-case spelling (``price_change``, ``high``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from core.events import AlertTriggered
from core.events.fast import alert_triggered_ok

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


def record_row(r: Mapping[str, Any]) -> tuple[Any, ...]:
    """One valid alert, as a decoded Avro dict with the model's values, to its row.

    ``r`` is a record ``core.events.fast.alert_triggered_ok`` accepted or a
    validated model's ``to_avro()``.
    """
    old, new = r["old_value"], r["new_value"]
    return (
        r["event_id"],
        r["rule_id"],
        str(r["alert_type"]).lower(),
        r["target_asin"],
        str(r["severity"]).lower(),
        r["title"],
        r["message"],
        None if old is None else json.loads(old),
        None if new is None else json.loads(new),
        r["change_percentage"],
        dict(r["metadata"]),
        r["triggered_at"],
    )


def alert_row(event: AlertTriggered) -> tuple[Any, ...]:
    return record_row(event.to_avro())


def prepare(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Decoded Avro dict -> row (raises pydantic.ValidationError on an invalid record).

    A record the cheap check accepts as the model would skips the model; anything else
    goes through ``AlertTriggered.from_avro``, so a dead letter carries pydantic's message.
    """
    if alert_triggered_ok(record):
        return record_row(record)
    return record_row(AlertTriggered.from_avro(record).to_avro())


def merge(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per idempotency key (event_id, triggered_at): a duplicate is the same alert."""
    seen: dict[tuple[Any, Any], tuple[Any, ...]] = {}
    for row in rows:
        seen.setdefault((row[_EVENT_ID], row[_TRIGGERED_AT]), row)
    return list(seen.values())
