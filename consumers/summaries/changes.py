"""A decoded CDC envelope -> one :class:`Change` of a table the summaries need (pure).

Only the columns a summary uses are kept. The envelope's rules (schemas/avro/cdc_change,
docs/cdc.md) that matter here:

* the row's identity is its primary key (``key_columns``); a delete carries only the key
  (replica identity DEFAULT), so whatever else a delete needs (the ASIN of a snapshot)
  comes from the state the consumer already has;
* a column listed in ``unchanged_toast`` is absent from ``after``: keep the stored value;
* ``(source.commit_lsn, source.lsn)`` orders changes: commit order, then WAL order
  inside a transaction. It is the version the consumer compares to skip redeliveries;
* a truncate (``t``) has no row: it removes every row older than itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from core.errors import RecordError

Version = tuple[int, int]

#: per source table: its primary key columns, and the value columns a summary needs with
#: the envelope type each must have (numeric travels as exact decimal text, jsonb as text)
TABLES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "products": (
        ("asin",),
        {"title": "text", "brand": "text", "category": "text", "is_active": "bool"},
    ),
    "product_snapshots": (
        ("id", "scraped_at"),
        {
            "asin": "text",
            "price": "numeric",
            "rating": "numeric",
            "review_count": "int",
            "bsr_data": "text",
            "availability_status": "text",
        },
    ),
    "alerts": (
        ("id", "triggered_at"),
        {"target_asin": "text", "is_read": "bool", "is_resolved": "bool"},
    ),
}

#: key columns that are timestamps (normalised, so that equal instants are equal keys)
_TIME_KEYS = {"scraped_at", "triggered_at"}
_OPS = {"c", "u", "d", "r", "t"}


@dataclass(frozen=True, slots=True)
class Change:
    table: str
    op: str  # c u d r t
    version: Version
    commit_time_us: int
    #: primary key values in key order; () for a truncate
    key: tuple[Any, ...] = ()
    #: value columns present in the after-image (c, u, r); empty for d and t
    values: dict[str, Any] | None = None
    #: value columns whose unchanged TOAST value was not sent (keep the stored one)
    toast: frozenset[str] = frozenset()

    @property
    def is_delete(self) -> bool:
        return self.op == "d"

    @property
    def is_truncate(self) -> bool:
        return self.op == "t"


def _fail(message: str) -> RecordError:
    return RecordError(f"CDC event: {message}")


def _check(table: str, column: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    ok = {
        "text": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "numeric": isinstance(value, str),
    }[kind]
    if not ok:
        raise _fail(f"{table}.{column} is {type(value).__name__}, expected {kind}")
    if kind == "numeric":
        try:
            Decimal(value)
        except InvalidOperation:
            raise _fail(f"{table}.{column} is not a decimal: {value[:40]!r}") from None
    return value


def _key_value(table: str, column: str, value: Any) -> Any:
    if value is None:
        raise _fail(f"{table}: key column {column} is missing or null")
    if column in _TIME_KEYS:
        if not isinstance(value, str):
            raise _fail(f"{table}.{column} is {type(value).__name__}, expected a timestamp")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise _fail(f"{table}.{column} is not an ISO timestamp: {value[:40]!r}") from None
    if column == "id":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(f"{table}.id is {type(value).__name__}, expected an integer")
        return value
    if not isinstance(value, str) or not value:
        raise _fail(f"{table}.{column} must be a non-empty string")
    return value


def _micros(value: Any) -> int:
    """commit_time as Unix microseconds (Avro readers give the logical type as a datetime)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        # whole seconds through the float, microseconds exactly
        return int(value.replace(microsecond=0).timestamp()) * 1_000_000 + value.microsecond
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _fail("source.commit_time missing")


def parse_change(record: dict[str, Any]) -> Change:
    """Validate one decoded envelope and keep what the summaries need; RecordError if bad."""
    source = record.get("source")
    if not isinstance(source, dict):
        raise _fail("no source")
    table = source.get("table")
    if table not in TABLES:
        raise _fail(f"table {table!r} is not one the summaries consume")
    op = record.get("op")
    if op not in _OPS:
        raise _fail(f"unknown op {op!r}")
    version = (source.get("commit_lsn"), source.get("lsn"))
    if not all(isinstance(v, int) and v >= 0 for v in version):
        raise _fail("source.commit_lsn / source.lsn missing")
    commit_time = _micros(source.get("commit_time"))
    if op == "t":
        return Change(table, op, version, commit_time)  # type: ignore[arg-type]
    key_columns, value_columns = TABLES[table]
    row = record.get("before") if op == "d" else record.get("after")
    if not isinstance(row, dict):
        raise _fail(f"op {op} without its row image")
    key = tuple(_key_value(table, c, row.get(c)) for c in key_columns)
    if op == "d":
        return Change(table, op, version, commit_time, key)  # type: ignore[arg-type]
    unchanged = set(record.get("unchanged_toast") or ())
    values: dict[str, Any] = {}
    for column, kind in value_columns.items():
        if column in row:
            values[column] = _check(table, column, kind, row[column])
        elif column not in unchanged:
            # a column the source no longer sends (dropped): it has no value any more
            values[column] = None
    toast = frozenset(c for c in unchanged if c in value_columns)
    return Change(table, op, version, commit_time, key, values, toast)  # type: ignore[arg-type]
