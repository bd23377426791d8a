"""Binary COPY of plain tuples into a staging table (psycopg 3)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_dumps

# datetimes and dataclasses are not JSON to json.dumps: keep them an error here too
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def fast_json_dumps(obj: Any) -> bytes | str:
    """``json.dumps`` for jsonb columns, about 10x faster, same stored document.

    orjson writes UTF-8 instead of ``\\u`` escapes and a float's shortest repr, which
    jsonb parses to the same value. Whatever orjson refuses (ints beyond 64 bits, lone
    surrogates, non-str keys, Decimal, ...) goes to ``json.dumps``, which then behaves as
    before. Only for documents without NaN or infinities (orjson writes those as null,
    json.dumps as NaN, which PostgreSQL rejects): the scrape rows' floats come from
    validated finite decimals.
    """
    try:
        return orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj)


def use_fast_json(cur: psycopg.Cursor[Any]) -> None:
    """Serialize json/jsonb values COPYed or sent through ``cur`` with ``fast_json_dumps``."""
    set_json_dumps(fast_json_dumps, cur)


def copy_rows(cur: psycopg.Cursor[Any], statement: str, types: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` in binary format; ``types`` names each column's PostgreSQL type.

    Binary COPY needs the types up front (psycopg cannot infer them per column), and
    skips the text parsing the server would otherwise do for every value.
    """
    with cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
