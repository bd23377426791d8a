"""One record's way in: size limits, decode, limits again, map to rows (pure, no I/O).

The loop runs this for every record and hands any exception to the error policy; the
fuzz tests (tests/consumers/test_fuzz.py) run the very same function on mutated bytes.
The limits come first so that an oversized record costs a length check, not a decode or a
model validation, and never reaches PostgreSQL (where a 50 MB text would be stored, and a
huge batch would hold the transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.errors import RecordTooLargeError
from core.settings import ConsumerSettings


def _within(value: Any, max_text: int, max_items: int) -> bool:
    # the hot path: no paths built, scalars skipped by one type test (most fields are scalars)
    for v in value.values() if isinstance(value, dict) else value:
        t = type(v)
        if t is str or t is bytes:
            if len(v) > max_text:
                return False
        elif t is list or t is dict or t is tuple:
            if len(v) > max_items or not _within(v, max_text, max_items):
                return False
    return True


def _first_over(record: Any, limits: ConsumerSettings) -> str:
    """The reason for the first value over a limit (the slow walk, only for a refused record)."""
    stack: list[tuple[str, Any]] = [("", record)]
    max_text, max_items = limits.max_text_chars, limits.max_list_items
    while stack:
        where, value = stack.pop()
        if isinstance(value, str | bytes):
            if len(value) > max_text:
                return (f"{where} is {len(value)} characters long, over the limit of {max_text} "
                        "(INSIGHTS_MAX_TEXT_CHARS)")
        elif isinstance(value, dict):
            if len(value) > max_items and where:
                return f"{where} has {len(value)} entries, over the limit of {max_items} (INSIGHTS_MAX_LIST_ITEMS)"
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            if len(value) > max_items:
                return f"{where} has {len(value)} items, over the limit of {max_items} (INSIGHTS_MAX_LIST_ITEMS)"
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return "a value is over a limit"


def check_limits(record: dict[str, Any], limits: ConsumerSettings) -> None:
    """Raise :class:`RecordTooLargeError` naming the first field over a limit."""
    if not _within(record, limits.max_text_chars, limits.max_list_items):
        raise RecordTooLargeError(_first_over(record, limits))


def admit(
    value: bytes | None,
    decoder: Callable[[bytes, Any], dict[str, Any]],
    prepare: Callable[[dict[str, Any]], Any],
    context: Any,
    limits: ConsumerSettings,
) -> Any:
    """Encoded record value -> the sink's rows; raises on anything that is not a valid record."""
    if value is None:
        raise ValueError("record has no value (tombstone): nothing to store")
    if len(value) > limits.max_record_bytes:
        raise RecordTooLargeError(
            f"record is {len(value)} bytes, over the limit of {limits.max_record_bytes} (INSIGHTS_MAX_RECORD_BYTES)"
        )
    record = decoder(value, context)
    check_limits(record, limits)
    return prepare(record)
