"""A batch of changes -> the net change per table and key (pure).

PostgreSQL refuses to touch one row twice in one ``INSERT ... ON CONFLICT``, so the
batch is folded first, by the same rule the database applies to what is stored: per
key, the change with the highest version wins, and a version not above the one already
folded is a redelivery and is ignored. Folding two upserts of one key keeps the earlier
value of a column the later one left out as unchanged TOAST. A truncate removes every
change older than itself from the batch (it is copied to every Kafka partition, so this
works whatever order the partitions were read in), and the newest truncate of a table
is passed on for the stored rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumers.summaries.changes import TABLES, Change, Version


@dataclass(slots=True)
class Net:
    """The net effect on one key: a live row (values + still-missing TOAST columns) or a delete."""

    key: tuple[Any, ...]
    version: Version
    commit_time_us: int
    deleted: bool
    values: dict[str, Any] = field(default_factory=dict)
    toast: frozenset[str] = frozenset()


@dataclass(slots=True)
class TableBatch:
    truncate: Version | None = None
    truncate_time_us: int = 0
    rows: dict[tuple[Any, ...], Net] = field(default_factory=dict)


def fold(changes: Iterable[Change]) -> dict[str, TableBatch]:
    """Per table (only tables with changes), the newest truncate and the net change per key."""
    changes = list(changes)
    out: dict[str, TableBatch] = {}
    for change in changes:
        if change.is_truncate:
            batch = out.setdefault(change.table, TableBatch())
            if batch.truncate is None or change.version > batch.truncate:
                batch.truncate = change.version
                batch.truncate_time_us = change.commit_time_us
    for change in changes:
        if change.is_truncate:
            continue
        batch = out.setdefault(change.table, TableBatch())
        if batch.truncate is not None and change.version <= batch.truncate:
            continue  # committed before the truncate: gone
        current = batch.rows.get(change.key)
        if current is not None and change.version <= current.version:
            continue  # a redelivery, or older than what is folded
        batch.rows[change.key] = _apply(current, change)
    return out


def _apply(current: Net | None, change: Change) -> Net:
    if change.is_delete:
        return Net(change.key, change.version, change.commit_time_us, deleted=True)
    values = dict(change.values or {})
    toast = change.toast
    if current is not None and not current.deleted and toast:
        # TOAST left out now but known from an earlier change of this batch
        for column in toast:
            if column in current.values:
                values[column] = current.values[column]
        toast = frozenset(c for c in toast if c not in current.values)
    return Net(change.key, change.version, change.commit_time_us, deleted=False, values=values, toast=toast)


def value_columns(table: str) -> tuple[str, ...]:
    return tuple(TABLES[table][1])
