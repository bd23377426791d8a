"""Plans for reading one writer schema into one reader schema, made once per pair.

fastavro resolves a writer schema to a reader schema field by field on every record,
which roughly doubles the cost of a decode. The common evolution step, though, is the
one this project's rules produce: the reader appends fields with defaults to the
writer's record and changes nothing else. For that shape, decoding with the writer's
schema alone and filling in the appended fields' defaults gives the same dict as full
resolution (a contract test checks this on every pair of versions), at the price of a
plain decode. Any other shape gets fastavro's full resolution.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import json

_PLAIN_DEFAULTS = (type(None), bool, int, float, str)


def _shape(raw: Any) -> str:
    """The schema without its docs: what decoding depends on. Stricter than the parsing
    canonical form on purpose, which drops logical types (a uuid string and a plain
    string share a fingerprint but do not decode to the same Python value)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "doc"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return json.dumps(strip(raw), sort_keys=True)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    writer: Any
    #: None: decode with the writer's schema alone (same schema, or appended fields only)
    reader: Any | None
    #: (field name, default, needs a fresh copy per record) for appended reader fields
    fill: tuple[tuple[str, Any, bool], ...] = ()


def _appended_defaults(writer_raw: Any, reader_raw: Any) -> tuple[tuple[str, Any, bool], ...] | None:
    """The appended fields' defaults when ``reader`` = ``writer`` + fields with defaults."""
    if not (isinstance(writer_raw, dict) and isinstance(reader_raw, dict)):
        return None
    if writer_raw.get("type") != "record" or reader_raw.get("type") != "record":
        return None
    w_fields, r_fields = writer_raw["fields"], reader_raw["fields"]
    if len(r_fields) <= len(w_fields):
        return None
    truncated = {**reader_raw, "fields": r_fields[: len(w_fields)]}
    if _shape(truncated) != _shape(writer_raw):
        return None
    fill = []
    for field in r_fields[len(w_fields) :]:
        if "default" not in field:
            return None
        default = field["default"]
        ftype = field["type"]
        # only defaults whose Python value is the JSON value itself: no logical types
        # (a decimal default is a byte string, a timestamp a number), no named types
        branch = ftype[0] if isinstance(ftype, list) else ftype
        if isinstance(branch, dict) and branch.get("type") in ("array", "map"):
            if default not in ([], {}):
                return None
            fill.append((field["name"], default, True))
            continue
        if isinstance(branch, dict) or branch in ("bytes", "fixed") or not isinstance(default, _PLAIN_DEFAULTS):
            return None
        fill.append((field["name"], default, False))
    return tuple(fill)


def plan(writer_raw: Any, writer_parsed: Any, reader_raw: Any, reader_parsed: Any) -> ReadPlan:
    if writer_parsed is reader_parsed or _shape(writer_raw) == _shape(reader_raw):
        return ReadPlan(writer_parsed, None)
    fill = _appended_defaults(writer_raw, reader_raw)
    if fill is not None:
        return ReadPlan(writer_parsed, None, fill)
    return ReadPlan(writer_parsed, reader_parsed)


def apply_fill(record: dict, fill: tuple[tuple[str, Any, bool], ...]) -> dict:
    for name, default, fresh in fill:
        record[name] = copy.copy(default) if fresh else default
    return record
