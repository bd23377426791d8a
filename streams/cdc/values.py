"""Tuple text -> Python values by type OID, and Python values -> the envelope's Value union.

``to_python`` uses psycopg's own text loaders (the same ones a query result uses), so a
CDC value and a ``SELECT`` value of the same column compare equal: ``numeric`` ->
``Decimal``, ``timestamptz`` -> aware ``datetime``, ``jsonb`` -> dict/list, arrays ->
lists, ``inet`` -> ``ipaddress`` objects, ``interval`` -> ``timedelta``; unknown OIDs
(enums, domains of user types) stay ``str``.

``to_envelope`` maps the text to the Avro union ``null|boolean|long|double|string``
documented in ``schemas/avro/cdc_change/v1.avsc``. It keeps PostgreSQL's text where that
text already is the canonical, lossless form (numeric, json, interval, inet, uuid, ...)
and parses only what changes shape (booleans, integers, floats, times, arrays).

The walsender must print values with ``DateStyle=ISO`` and ``TimeZone=UTC``; the
transport sets both on the replication connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from psycopg.adapt import Transformer
from psycopg.pq import Format

from streams.cdc.pgoutput import UNCHANGED_TOAST, Relation, TupleData

BOOL, INT2, INT4, INT8, OID = 16, 21, 23, 20, 26
FLOAT4, FLOAT8 = 700, 701
JSON, JSONB = 114, 3802
TIMESTAMP, TIMESTAMPTZ = 1114, 1184

EnvelopeValue = None | bool | int | float | str


class ValueConverter:
    """Caches one loader / one envelope function per type OID (no I/O)."""

    def __init__(self) -> None:
        self._tx = Transformer()
        self._loaders: dict[int, Callable[[bytes], Any]] = {}
        self._envelope: dict[int, Callable[[bytes], EnvelopeValue]] = {}

    # --- Python values ---------------------------------------------------------------
    def to_python(self, type_oid: int, text: bytes) -> Any:
        load = self._loaders.get(type_oid)
        if load is None:
            load = self._tx.get_loader(type_oid, Format.TEXT).load
            self._loaders[type_oid] = load
        value = load(text)
        if isinstance(value, (bytes, memoryview)):  # the fallback loader of unknown OIDs
            return bytes(value).decode("utf-8")
        return value

    def row(self, relation: Relation, values: TupleData) -> tuple[dict[str, Any], list[str]]:
        """Python values by column name, plus the columns whose TOAST value was not sent."""
        out: dict[str, Any] = {}
        unchanged: list[str] = []
        for column, raw in zip(relation.columns, values, strict=True):
            if raw is UNCHANGED_TOAST:
                unchanged.append(column.name)
            elif raw is None:
                out[column.name] = None
            else:
                out[column.name] = self.to_python(column.type_oid, raw)  # type: ignore[arg-type]
        return out, unchanged

    # --- envelope values -------------------------------------------------------------
    def to_envelope(self, type_oid: int, text: bytes) -> EnvelopeValue:
        fn = self._envelope.get(type_oid)
        if fn is None:
            fn = self._envelope_fn(type_oid)
            self._envelope[type_oid] = fn
        return fn(text)

    def envelope_row(self, relation: Relation, values: TupleData) -> tuple[dict[str, EnvelopeValue], list[str]]:
        out: dict[str, EnvelopeValue] = {}
        unchanged: list[str] = []
        fns = self._envelope
        for column, raw in zip(relation.columns, values, strict=True):
            if raw is None:
                out[column.name] = None
            elif raw is UNCHANGED_TOAST:
                unchanged.append(column.name)
            else:
                fn = fns.get(column.type_oid)
                if fn is None:
                    fn = self._envelope_fn(column.type_oid)
                    fns[column.type_oid] = fn
                out[column.name] = fn(raw)  # type: ignore[arg-type]
        return out, unchanged

    def envelope_fn(self, type_oid: int) -> Callable[[bytes], EnvelopeValue]:
        """The (cached) text -> envelope value function of a type."""
        fn = self._envelope.get(type_oid)
        if fn is None:
            fn = self._envelope[type_oid] = self._envelope_fn(type_oid)
        return fn

    def is_array(self, type_oid: int) -> bool:
        """True when the envelope spells this type as JSON text of its elements."""
        return type(self._tx.get_loader(type_oid, Format.TEXT)).__name__.endswith("ArrayLoader")

    def _envelope_fn(self, type_oid: int) -> Callable[[bytes], EnvelopeValue]:
        if type_oid == BOOL:
            return lambda text: text == b"t"
        if type_oid in (INT2, INT4, INT8, OID):
            return int
        if type_oid in (FLOAT4, FLOAT8):
            return float
        if type_oid in (TIMESTAMPTZ, TIMESTAMP):
            load = self._tx.get_loader(type_oid, Format.TEXT).load

            def iso(text: bytes) -> str:
                try:
                    return load(text).isoformat()
                except Exception:  # 'infinity' and years beyond Python's range: keep PG's text
                    return text.decode("utf-8")

            return iso
        if self.is_array(type_oid):
            load = self._tx.get_loader(type_oid, Format.TEXT).load
            return lambda text: json.dumps(_jsonable(load(text)), separators=(",", ":"))
        # canonical as printed: numeric, json/jsonb, text, uuid, inet, interval, date, enums...
        return lambda text: text.decode("utf-8")


def _jsonable(value: Any) -> Any:
    """Array elements as the envelope spells scalars: exact numbers and times as strings."""
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, (dict,)):
        return value
    return str(value)
