"""Decoded pgoutput changes -> change events: (table, Kafka key, Avro envelope dict).

Pure. The rules that matter downstream:

* the record key is the JSON object of the row's replica-identity (primary key) columns,
  so every change of one row lands on one Kafka partition, in commit order;
* an UPDATE whose key changed (same partition) becomes ``d`` for the old key plus ``u``
  for the new one; an UPDATE that moves a row to another partition already arrives from
  PostgreSQL as Delete + Insert and becomes ``d`` + ``c``: either way the old key is
  deleted downstream and the new key exists;
* unchanged TOAST columns are absent from ``after`` and listed in ``unchanged_toast``;
* a TRUNCATE has no key; the reader copies it to every partition of the topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streams.cdc.pgoutput import Delete, Insert, Relation, TupleData, Update
from streams.cdc.values import EnvelopeValue, ValueConverter


@dataclass(frozen=True, slots=True)
class SourceInfo:
    lsn: int
    commit_lsn: int
    xid: int
    commit_time_us: int  # Unix epoch microseconds
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    schema: str
    table: str
    key: bytes | None
    value: dict[str, Any]


def key_bytes(relation: Relation, row: dict[str, EnvelopeValue]) -> bytes | None:
    names = relation.key_columns
    if not names:
        return None
    return json.dumps({n: row.get(n) for n in names}, separators=(",", ":")).encode()


def _source(relation: Relation, src: SourceInfo) -> dict[str, Any]:
    return {
        "lsn": src.lsn,
        "commit_lsn": src.commit_lsn,
        "xid": src.xid,
        "commit_time": src.commit_time_us,
        "schema": relation.namespace,
        "table": relation.name,
        "snapshot": src.snapshot,
    }


def _event(
    relation: Relation,
    op: str,
    key: bytes | None,
    before: dict[str, EnvelopeValue] | None,
    after: dict[str, EnvelopeValue] | None,
    unchanged: list[str],
    src: SourceInfo,
) -> ChangeEvent:
    value = {
        "op": op,
        "before": before,
        "after": after,
        "unchanged_toast": unchanged,
        "key_columns": list(relation.key_columns),
        "source": _source(relation, src),
    }
    return ChangeEvent(relation.namespace, relation.name, key, value)


def _key_only(relation: Relation, row: dict[str, EnvelopeValue]) -> dict[str, EnvelopeValue]:
    return {n: row.get(n) for n in relation.key_columns}


def read_event(relation: Relation, after: dict[str, EnvelopeValue], src: SourceInfo) -> ChangeEvent:
    return _event(relation, "r", key_bytes(relation, after), None, after, [], src)


def change_events(
    converter: ValueConverter, relation: Relation, message: Insert | Update | Delete, src: SourceInfo
) -> list[ChangeEvent]:
    if isinstance(message, Insert):
        after, unchanged = converter.envelope_row(relation, message.new)
        return [_event(relation, "c", key_bytes(relation, after), None, after, unchanged, src)]
    if isinstance(message, Delete):
        before = _old_image(converter, relation, message.old_kind, message.old)
        return [_event(relation, "d", key_bytes(relation, before), before, None, [], src)]
    after, unchanged = converter.envelope_row(relation, message.new)
    new_key = key_bytes(relation, after)
    before = None
    if message.old is not None and message.old_kind is not None:
        before = _old_image(converter, relation, message.old_kind, message.old)
        old_key = key_bytes(relation, before)
        if old_key != new_key:
            # the key changed: the old key is gone downstream, the new one holds the row
            return [
                _event(relation, "d", old_key, before, None, [], src),
                _event(relation, "u", new_key, before, after, unchanged, src),
            ]
    return [_event(relation, "u", new_key, before, after, unchanged, src)]


def _old_image(
    converter: ValueConverter, relation: Relation, kind: str, old: TupleData
) -> dict[str, EnvelopeValue]:
    row, _ = converter.envelope_row(relation, old)
    # 'K' tuples carry NULL for every non-key column: those NULLs are "not sent", not values
    return _key_only(relation, row) if kind == "K" else row


def truncate_event(relation: Relation, src: SourceInfo) -> ChangeEvent:
    return _event(relation, "t", None, None, None, [], src)
