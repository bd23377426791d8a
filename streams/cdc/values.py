"""One column's value: tuple text -> Python value, -> envelope value, -> envelope bytes.

``to_python`` uses psycopg's own text loaders (the same ones a query result uses), so a
CDC value and a ``SELECT`` value of the same column compare equal: ``numeric`` ->
``Decimal``, ``timestamptz`` -> aware ``datetime``, ``jsonb`` -> dict/list, arrays ->
lists, ``inet`` -> ``ipaddress`` objects, ``interval`` -> ``timedelta``; unknown OIDs
(enums, domains of user types) stay ``str``.

``to_envelope`` is the reference of what a column becomes in the envelope: the Avro
union ``null|boolean|long|double|string`` documented in ``schemas/avro/cdc_change/v1.avsc``.
It keeps PostgreSQL's text where that text already is the canonical, lossless form
(numeric, json, interval, inet, uuid, ...) and parses only what changes shape (booleans,
integers, floats, times, arrays).

``writer`` is the same rule for the fast path (:class:`ColumnWriter`): from the tuple
text straight to the value's Avro bytes and to its JSON text in a record key, with no
intermediate Python value for the common shapes. Whatever a fast writer does not
recognise (infinite or BC timestamps, escaped array elements, non-text arrays, ...) it
hands to ``to_envelope`` for that value only, so the two never disagree
(``tests/cdc/test_envelope.py`` compares them on generated rows).

The walsender must print values with ``DateStyle=ISO`` and ``TimeZone=UTC``; the
transport sets both on the replication connection.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from psycopg.adapt import Transformer
from psycopg.pq import Format

from streams.cdc import avro
from streams.cdc.pgoutput import UNCHANGED_TOAST, Relation, TupleData

BOOL, INT2, INT4, INT8, OID = 16, 21, 23, 20, 26
FLOAT4, FLOAT8 = 700, 701
JSON, JSONB = 114, 3802
TIMESTAMP, TIMESTAMPTZ = 1114, 1184
TEXT_ARRAY, VARCHAR_ARRAY = 1009, 1015

EnvelopeValue = None | bool | int | float | str

#: what a type becomes in the envelope; the one classification of type OIDs both paths use
#: (the generated writers inline bool, int, float and text)
Kind = Literal["bool", "int", "float", "timestamp", "text_array", "array", "text"]


@dataclass(frozen=True, slots=True)
class ColumnWriter:
    """The fast writers of one column (one instance per column: ``value`` may keep a cache)."""

    kind: Kind
    #: tuple text -> union branch + payload, the bytes ``avro.value(to_envelope(text))`` gives
    value: Callable[[bytes], bytes]
    #: tuple text -> the JSON text ``json.dumps(to_envelope(text))`` gives in a record key
    key: Callable[[bytes], bytes]


def mask_text(raw: bytes) -> str:
    """A masked column's value: the SHA-256 (hex) of its text; equal values stay equal (joins, keys)."""
    return hashlib.sha256(raw).hexdigest()


def _mask_value(raw: bytes) -> bytes:
    return avro.value(mask_text(raw))


def _mask_key(raw: bytes) -> bytes:
    return json.dumps(mask_text(raw)).encode()


#: a masked column's writer: not inlined by the generated code (kind "array" calls its writer)
MASKED = ColumnWriter("array", _mask_value, _mask_key)


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
            elif column.name in relation.masked:
                out[column.name] = mask_text(raw)  # type: ignore[arg-type]
                continue
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

    def kind(self, type_oid: int) -> Kind:
        """boolean, long, double, ISO 8601 text, JSON text of an array, or the text as printed."""
        if type_oid == BOOL:
            return "bool"
        if type_oid in (INT2, INT4, INT8, OID):
            return "int"
        if type_oid in (FLOAT4, FLOAT8):
            return "float"
        if type_oid in (TIMESTAMPTZ, TIMESTAMP):
            return "timestamp"
        if self.is_array(type_oid):
            return "text_array" if type_oid in (TEXT_ARRAY, VARCHAR_ARRAY) else "array"
        return "text"  # canonical as printed: the envelope value is the text itself

    def writer(self, type_oid: int) -> ColumnWriter:
        """The fast writers of a column of this type, equal to the reference by construction
        for bool, int, float and text, and by falling back to it for anything unusual."""
        kind = self.kind(type_oid)
        generic = self.envelope_fn(type_oid)

        def generic_value(raw: bytes) -> bytes:
            return avro.value(generic(raw))

        def generic_key(raw: bytes) -> bytes:
            return json.dumps(generic(raw), separators=(",", ":")).encode()

        if kind == "bool":
            return ColumnWriter(kind, bool_value, bool_key)
        if kind == "int":
            return ColumnWriter(kind, int_value, int_key)
        if kind == "float":
            return ColumnWriter(kind, float_value, generic_key)  # json.dumps spells NaN and inf its own way
        if kind == "text":
            return ColumnWriter(kind, text_value, text_key)
        if kind == "timestamp":
            tz = type_oid == TIMESTAMPTZ
            # the previous text and its ISO form: a key column's value is written twice per
            # change (map and key), and now()-like defaults repeat across a transaction
            last: list[bytes | None] = [None, None]

            def iso(raw: bytes) -> bytes | None:
                if raw != last[0]:
                    last[0], last[1] = raw, timestamp_iso(raw, tz)
                return last[1]

            def ts_value(raw: bytes) -> bytes:
                text = iso(raw)
                return generic_value(raw) if text is None else avro.STRING_HEAD[len(text)] + text

            def ts_key(raw: bytes) -> bytes:
                text = iso(raw)
                return generic_key(raw) if text is None else b'"' + text + b'"'

            return ColumnWriter(kind, ts_value, ts_key)
        if kind == "text_array":

            def array_value(raw: bytes) -> bytes:
                text = text_array_json(raw)
                return generic_value(raw) if text is None else avro.string_head(len(text)) + text

            return ColumnWriter(kind, array_value, generic_key)
        return ColumnWriter(kind, generic_value, generic_key)

    def is_array(self, type_oid: int) -> bool:
        """True when the envelope spells this type as JSON text of its elements."""
        return type(self._tx.get_loader(type_oid, Format.TEXT)).__name__.endswith("ArrayLoader")

    def _envelope_fn(self, type_oid: int) -> Callable[[bytes], EnvelopeValue]:
        kind = self.kind(type_oid)
        if kind == "bool":
            return lambda text: text == b"t"
        if kind == "int":
            return int
        if kind == "float":
            return float
        if kind == "timestamp":
            load = self._tx.get_loader(type_oid, Format.TEXT).load

            def iso(text: bytes) -> str:
                try:
                    return load(text).isoformat()
                except Exception:  # 'infinity' and years beyond Python's range: keep PG's text
                    return text.decode("utf-8")

            return iso
        if kind in ("text_array", "array"):
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


# --- the fast writers -----------------------------------------------------------------------
# Each equals ``avro.value(to_envelope(text))`` (value) or ``json.dumps(to_envelope(text))``
# (key) for every text PostgreSQL prints for its type; the timestamp and array converters
# return None for what they do not recognise and the caller falls back to the reference.


def bool_value(raw: bytes) -> bytes:
    return avro.VALUE_TRUE if raw == b"t" else avro.VALUE_FALSE


def bool_key(raw: bytes) -> bytes:
    return b"true" if raw == b"t" else b"false"


def int_value(raw: bytes) -> bytes:
    return avro.VALUE_LONG + avro.zigzag(int(raw))


def int_key(raw: bytes) -> bytes:
    return str(int(raw)).encode()


def float_value(raw: bytes) -> bytes:
    return avro.VALUE_DOUBLE + avro.double(float(raw))


def checked_utf8(raw: bytes) -> None:
    """Invalid UTF-8 fails here as it fails the reference's ``decode`` (ASCII needs no check)."""
    if not raw.isascii():
        raw.decode("utf-8")


def text_value(raw: bytes) -> bytes:
    checked_utf8(raw)
    return avro.string_head(len(raw)) + raw


_PLAIN_JSON_STRING = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def text_key(raw: bytes) -> bytes:
    checked_utf8(raw)
    if _PLAIN_JSON_STRING.fullmatch(raw) is not None:  # printable ASCII without quote or backslash
        return b'"' + raw + b'"'
    return json.dumps(raw.decode("utf-8")).encode()


def timestamp_iso(raw: bytes, tz: bool) -> bytes | None:
    """PostgreSQL ISO output (DateStyle=ISO, TimeZone=UTC) -> ``datetime.isoformat()``, or None."""
    n = len(raw)
    if tz:
        if raw[n - 3 :] != b"+00":
            return None
        n -= 3
        suffix = b"+00:00"
    else:
        suffix = b""
    if n < 19 or raw[4] != 0x2D or raw[7] != 0x2D or raw[10] != 0x20 or raw[13] != 0x3A or raw[16] != 0x3A:
        return None
    if n == 19:
        frac = b""
    elif raw[19] == 0x2E and 21 <= n <= 26:
        # isoformat() writes microseconds as six digits, and none at all when they are zero
        frac = raw[19:n].ljust(7, b"0")
        if not frac[1:].isdigit() or frac == b".000000":
            return None
    else:
        return None  # BC dates, years past 9999, 'infinity'
    body = raw[:19]
    if not (body[:4] + body[5:7] + body[8:10] + body[11:13] + body[14:16] + body[17:19]).isdigit():
        return None
    return body[:10] + b"T" + body[11:] + frac + suffix


# array elements PostgreSQL prints: unquoted (printable ASCII without space, quote, comma,
# backslash or braces) or quoted without escapes (printable ASCII without quote or backslash);
# anything else (escapes, non-ASCII, nesting, bounds) takes the reference path
_UNQUOTED = rb"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7a\x7c\x7e]+"
_QUOTED = rb'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_ELEMENT = rb"(?:" + _QUOTED + rb"|" + _UNQUOTED + rb")"
_PLAIN_ARRAY = re.compile(rb"\{(?:" + _ELEMENT + rb"(?:," + _ELEMENT + rb")*)?\}")
_ELEMENTS = re.compile(rb'"([^"]*)"|([^,]+)')


def text_array_json(raw: bytes) -> bytes | None:
    """PostgreSQL's text of a one-dimensional text array -> the envelope's JSON text, or None."""
    if _PLAIN_ARRAY.fullmatch(raw) is None:
        return None
    if 0x22 not in raw:  # all unquoted
        inner = raw[1:-1]
        if not inner:
            return b"[]"
        parts = [b"null" if p == b"NULL" else b'"' + p + b'"' for p in inner.split(b",")]
    else:
        parts = [
            b"null" if plain == b"NULL" else b'"' + (quoted or plain) + b'"'
            for quoted, plain in _ELEMENTS.findall(raw, 1, len(raw) - 1)
        ]
    return b"[" + b",".join(parts) + b"]"
