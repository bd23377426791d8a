"""Binary COPY of plain tuples into a staging table (psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


def copy_rows(cur: psycopg.Cursor[Any], statement: str, types: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` in binary format; ``types`` names each column's PostgreSQL type.

    Binary COPY needs the types up front (psycopg cannot infer them per column), and
    skips the text parsing the server would otherwise do for every value.
    """
    with cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
