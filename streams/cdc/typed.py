"""Typed change events, the pure part: a table's catalog description -> its Avro schema, and
tuple text -> the Avro values of that schema. No I/O.

``INSIGHTS_CDC_FORMAT=typed`` publishes, per table, an envelope whose ``before``/``after``
are Avro records of the table's columns with logical types, instead of the generic
envelope's map of strings, longs and doubles (in which ``"19.99"`` numeric and text look
the same). The envelope's other fields (``op``, ``unchanged_toast``, ``key_columns``,
``source``) are the generic envelope's, copied from ``schemas/avro/cdc_change/v1.avsc``.

One function classifies a column (:func:`_column_type`) and returns both its Avro type
and its converter, so the schema and the values cannot drift apart:

============================  =============================================================
PostgreSQL                    Avro
============================  =============================================================
smallint, integer             int
bigint, oid                   long
real / double precision       float / double
numeric(p,s)                  bytes, decimal(p,s) (a negative scale s: decimal(p-s, 0))
numeric (no precision)        string: the exact decimal text ('NaN' and infinities too)
text, varchar, char, name     string
boolean                       boolean
timestamptz / timestamp       long, timestamp-micros / local-timestamp-micros
date                          int, date
uuid                          string, uuid
json, jsonb                   string, ``"connect.name": "io.debezium.data.Json"``
bytea                         bytes
T[]                           array of ["null", T] (one dimension)
anything else                 string: PostgreSQL's text output (interval, inet, time, enums..)
============================  =============================================================

A domain is typed as its base type. A masked column (``cdc_mask_columns``) is a string
(the SHA-256 hex of its text), as in the generic envelope.

Nullability: a column is ``["null", T]`` (default null) unless it is NOT NULL, with one
exception: a NOT NULL column whose values PostgreSQL may store out of line (TOAST: its
storage is not ``plain`` and its largest value is bigger than a TOAST pointer,
:func:`may_be_toasted`) and that is not a key column is nullable too, because an
UPDATE that leaves such a value alone does not send it; the reader then writes null and
names the column in ``unchanged_toast`` (it never makes a value up). The field's ``doc``
says so. ``before`` of a change whose old row PostgreSQL sent as its key only (replica
identity DEFAULT or USING INDEX) is the ``Key`` record: the key columns alone, so no
non-key column has to be faked.

A value a type cannot carry (a NaN in numeric(p,s), an infinite or BC timestamp or date,
a multi-dimensional array) raises :class:`NotRepresentable`; the reader stops on it with
one line (``errors.UnrepresentableValueError``) rather than publish something else.
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any
from uuid import UUID

from core.paths import SCHEMAS_DIR
from streams.cdc.pgoutput import UNCHANGED_TOAST, TupleData
from streams.cdc.values import mask_text

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, JSONB, FLOAT4, FLOAT8, BPCHAR, VARCHAR = 114, 3802, 700, 701, 1042, 1043
DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID_OID = 1082, 1114, 1184, 1700, 2950

#: the hint Debezium (Kafka Connect) puts on a string that holds JSON text
JSON_HINT = {"connect.name": "io.debezium.data.Json"}
#: the namespace of every typed envelope: ``insights.cdc.<schema>.<table>``
NAMESPACE = "insights.cdc"

Converter = Callable[[str], Any]


class NotRepresentable(ValueError):
    """A value its column's Avro type cannot carry; ``column`` is set by :class:`TypedRows`."""

    column = ""


class NullInNotNull(ValueError):
    """A NULL in a column the catalog says is NOT NULL: the schema was made after a later ALTER."""

    def __init__(self, column: str) -> None:
        super().__init__(f"NULL in NOT NULL column {column}")
        self.column = column


# --- the catalog's description of a table ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class ColumnInfo:
    name: str
    #: the type OID (a domain's base type) and its modifier, as ``pg_attribute`` has them
    type_oid: int
    typmod: int
    #: ``format_type()``: 'numeric(10,2)', 'timestamp with time zone', 'text[]', a domain's name
    type_name: str
    not_null: bool = False
    #: an array's element type (a domain's base type), 0 for anything else
    element_oid: int = 0
    #: an UPDATE may leave the value unsent (pgoutput ``'u'``): :func:`may_be_toasted`
    toastable: bool = False
    is_key: bool = False
    masked: bool = False


@dataclass(frozen=True, slots=True)
class TableInfo:
    schema: str
    table: str
    columns: tuple[ColumnInfo, ...]


# --- names ----------------------------------------------------------------------------------
_INVALID = re.compile(r"[^A-Za-z0-9_]")


def avro_name(name: str) -> str:
    """``name`` as an Avro name ([A-Za-z_][A-Za-z0-9_]*): other characters become ``_``."""
    out = _INVALID.sub("_", name)
    return out if out and not out[0].isdigit() else f"_{out}"


def field_names(columns: Sequence[ColumnInfo]) -> list[str]:
    """One Avro field name per column, unique: ``a-b`` and ``a_b`` become ``a_b`` and ``a_b_2``."""
    taken: set[str] = set()
    names = []
    for column in columns:
        base = name = avro_name(column.name)
        n = 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names.append(name)
    return names


def namespace(table: TableInfo) -> str:
    return f"{NAMESPACE}.{avro_name(table.schema)}.{avro_name(table.table)}"


# --- one column: its Avro type and converter -----------------------------------------------
def numeric_precision_scale(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of numeric(p,s) from ``atttypmod``; None for an unconstrained numeric.

    PostgreSQL 15 packs the scale in 11 bits, signed (numeric(5,-2) rounds to hundreds).
    """
    if typmod < 4:
        return None
    packed = typmod - 4
    scale = packed & 0x7FF
    if scale & 0x400:
        scale -= 0x800
    return (packed >> 16) & 0xFFFF, scale


#: PostgreSQL moves a value out of line only when it is bigger than the TOAST pointer that would
#: replace it (MAXALIGN(18) = 24 bytes; toast_tuple_find_biggest_attribute)
_TOAST_POINTER = 24


def may_be_toasted(type_oid: int, typmod: int, storage_not_plain: bool) -> bool:
    """Whether an UPDATE may leave a value of this column unsent: its storage lets it go out of
    line and its largest value is bigger than a TOAST pointer (numeric(10,2) never is)."""
    if not storage_not_plain:
        return False
    if type_oid == NUMERIC and typmod >= 4:
        precision, _ = numeric_precision_scale(typmod)  # type: ignore[misc]
        # 4-byte header, 2 bytes of weight/sign/scale, 2 bytes per 4 digits (+1 group for the point)
        return 6 + 2 * (precision // 4 + 2) > _TOAST_POINTER
    if type_oid in (VARCHAR, BPCHAR) and typmod >= 4:
        return 4 + 4 * (typmod - 4) > _TOAST_POINTER  # up to 4 bytes per character
    return True


def _decimal(precision: int, scale: int) -> tuple[Any, Converter, str]:
    # Avro's decimal needs 0 <= scale <= precision: a negative scale is that many more digits
    # at scale 0; a scale above the precision (numeric(2,5)) needs precision = scale
    avro_scale = max(scale, 0)
    avro_precision = max(precision - min(scale, 0), avro_scale)

    def convert(text: str) -> Decimal:
        value = Decimal(text)
        if not value.is_finite():
            raise NotRepresentable(f"holds {text!r}")
        return value

    return {"type": "bytes", "logicalType": "decimal", "precision": avro_precision, "scale": avro_scale}, convert, ""


def _timestamp(text: str) -> datetime:
    # DateStyle=ISO, TimeZone=UTC (the transport's session): '2024-01-02 03:04:05.123456+00'
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise NotRepresentable(f"holds {text!r} (infinite, BC or past year 9999)") from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise NotRepresentable(f"holds {text!r} (infinite, BC or past year 9999)") from None


def _bytea(text: str) -> bytes:
    if text.startswith("\\x"):  # bytea_output = hex, the default
        return bytes.fromhex(text[2:])
    return codecs.escape_decode(text.encode("latin-1"))[0]  # bytea_output = escape: \\ and \ooo


def _text(text: str) -> str:
    return text


def _bool(text: str) -> bool:
    return text == "t"


def _scalar(type_oid: int, typmod: int) -> tuple[Any, Converter, str]:
    """(Avro type, text -> value, a note for the field's doc) of a non-array type."""
    if type_oid in (INT2, INT4):
        return "int", int, ""
    if type_oid in (INT8, OID):
        return "long", int, ""
    if type_oid == FLOAT4:
        return "float", float, ""
    if type_oid == FLOAT8:
        return "double", float, ""
    if type_oid == NUMERIC:
        found = numeric_precision_scale(typmod)
        if found is None:
            return "string", _text, "numeric without precision: its exact decimal text, 'NaN' and infinities included"
        return _decimal(*found)
    if type_oid == BOOL:
        return "boolean", _bool, ""
    if type_oid == TIMESTAMPTZ:
        return {"type": "long", "logicalType": "timestamp-micros"}, _timestamp, ""
    if type_oid == TIMESTAMP:
        return {"type": "long", "logicalType": "local-timestamp-micros"}, _timestamp, ""
    if type_oid == DATE:
        return {"type": "int", "logicalType": "date"}, _date, ""
    if type_oid == UUID_OID:
        return {"type": "string", "logicalType": "uuid"}, UUID, ""
    if type_oid in (JSON, JSONB):
        return {"type": "string", **JSON_HINT}, _text, ""
    if type_oid == BYTEA:
        return "bytes", _bytea, ""
    if type_oid in (TEXT, VARCHAR, BPCHAR, NAME, CHAR):
        return "string", _text, ""
    return "string", _text, "PostgreSQL's text output"


def parse_array(text: str) -> list[str | None]:
    """The elements of a one-dimensional PostgreSQL array's text output, as text (None = NULL).

    ``{a,"b c",NULL,"NULL"}`` -> ``['a', 'b c', None, 'NULL']``; a dimension decoration
    (``[0:1]={1,2}``) is skipped; a nested array raises :class:`NotRepresentable`.
    """
    if text.startswith("["):
        text = text[text.index("=") + 1 :]
    if len(text) < 2 or text[0] != "{" or text[-1] != "}":
        raise ValueError(f"not an array: {text[:40]!r}")
    end = len(text) - 1
    items: list[str | None] = []
    i = 1
    if i == end:
        return items
    while True:
        c = text[i]
        if c == "{":
            raise NotRepresentable("holds a multi-dimensional array")
        if c == '"':
            i += 1
            parts = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                parts.append(text[i])
                i += 1
            items.append("".join(parts))
            i += 1
        else:
            j = text.find(",", i)
            if j < 0:
                j = end
            token = text[i:j]
            items.append(None if token == "NULL" else token)  # only an unquoted NULL is null
            i = j
        if i >= end:
            return items
        i += 1  # the comma


def _column_type(column: ColumnInfo) -> tuple[Any, Converter, str]:
    """(Avro type, tuple text -> value, doc note) of a column: the one classification."""
    if column.masked:
        return "string", _text, "masked: the SHA-256 (hex) of its text"
    if not column.element_oid:
        return _scalar(column.type_oid, column.typmod)
    # an array's typmod is its elements' (numeric(10,2)[])
    item, convert_item, note = _scalar(column.element_oid, column.typmod)

    def convert(text: str) -> list[Any]:
        return [None if v is None else convert_item(v) for v in parse_array(text)]

    return {"type": "array", "items": ["null", item]}, convert, note


# --- the schema -------------------------------------------------------------------------------
@cache
def _generic_fields() -> dict[str, Any]:
    path = SCHEMAS_DIR / "cdc_change" / "v1.avsc"
    return {f["name"]: f for f in json.loads(path.read_text(encoding="utf-8"))["fields"]}


def nullable_fields(raw: dict[str, Any]) -> set[str]:
    """The fields of a typed envelope's ``Value`` record that admit null."""
    before = next(f for f in raw["fields"] if f["name"] == "before")
    value = next(t for t in before["type"] if isinstance(t, dict) and t.get("name") == "Value")
    return {f["name"] for f in value["fields"] if isinstance(f["type"], list) and "null" in f["type"]}


def nullable(column: ColumnInfo, widened: frozenset[str] = frozenset()) -> bool:
    """Whether the column's field admits null (module doc: NOT NULL, TOAST, widened)."""
    if column.name in widened or not column.not_null:
        return True
    return column.toastable and not column.is_key


def _doc(column: ColumnInfo, is_nullable: bool, field_name: str, note: str) -> str:
    parts = [column.type_name + (" NOT NULL" if column.not_null else "")]
    if column.is_key:
        parts.append("key column")
    if column.not_null and is_nullable:
        parts.append("null only when the value was not sent (listed in unchanged_toast)")
    if note:
        parts.append(note)
    if field_name != column.name:
        parts.append(f"column {column.name!r}")
    return "; ".join(parts)


def _field(column: ColumnInfo, name: str, widened: frozenset[str]) -> dict[str, Any]:
    avro_type, _, note = _column_type(column)
    is_nullable = nullable(column, widened)
    if column.name in widened:
        # documented as the nullable column it was: SET NOT NULL must not make a new version
        column = dataclasses.replace(column, not_null=False)
    field: dict[str, Any] = {"name": name}
    if is_nullable:
        field["type"] = ["null", avro_type]
        field["default"] = None
    else:
        field["type"] = avro_type
    field["doc"] = _doc(column, is_nullable, name, note)
    return field


def envelope_schema(table: TableInfo, widened: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The typed envelope of ``table`` as Avro JSON. ``widened``: NOT NULL columns made nullable
    because a NULL arrived for them (the catalog changed after the change was written)."""
    names = field_names(table.columns)
    fields = [_field(c, n, widened) for c, n in zip(table.columns, names)]
    key_fields = [f for f, c in zip(fields, table.columns) if c.is_key]
    where = f"{table.schema}.{table.table}"
    generic = _generic_fields()
    value = {
        "type": "record",
        "name": "Value",
        "doc": f"A row of {where}, one field per published column, in column order.",
        "fields": fields,
    }
    key = {
        "type": "record",
        "name": "Key",
        "doc": f"The key columns of a row of {where}: what PostgreSQL sends of the old row under replica identity DEFAULT or USING INDEX.",
        "fields": copy.deepcopy(key_fields),
    }
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": namespace(table),
        "doc": f"One committed change of {where} (or one snapshot row), typed from the catalog; "
        "the fields other than before/after are the generic envelope's (schemas/avro/cdc_change). See docs/cdc.md.",
        "fields": [
            copy.deepcopy(generic["op"]),
            {
                "name": "before",
                "type": ["null", value, key],
                "default": None,
                "doc": "The row before the change: for d, the Key record (replica identity DEFAULT/USING INDEX) "
                "or the whole row (REPLICA IDENTITY FULL); for u, null unless the table has REPLICA IDENTITY FULL "
                "(whole row) or the key changed (Key); null for c, r and t.",
            },
            {
                "name": "after",
                "type": ["null", "Value"],
                "default": None,
                "doc": "The row after the change (c, u, r); null for d and t. A field listed in unchanged_toast "
                "is null here: its value was not sent and the consumer keeps the one it has.",
            },
            {
                **copy.deepcopy(generic["unchanged_toast"]),
                "doc": "Fields of after whose value was not sent because the UPDATE did not change a TOASTed "
                "(large, out-of-line) value: null in after, never a made-up value; the consumer keeps the value it "
                "already has for them. Empty for every op but u. (Under REPLICA IDENTITY FULL such a field is null "
                "in before too, unlisted, as it is absent from the generic envelope's before.)",
            },
            copy.deepcopy(generic["key_columns"]),
            copy.deepcopy(generic["source"]),
        ],
    }


# --- the values ---------------------------------------------------------------------------------
class TypedRows:
    """Tuple text -> the dicts of one table's ``Value`` and ``Key`` records (field name -> Avro value)."""

    def __init__(self, table: TableInfo, widened: frozenset[str] = frozenset()) -> None:
        self.table = table
        self.names = field_names(table.columns)
        self.value_name = f"{namespace(table)}.Value"
        self.key_name = f"{namespace(table)}.Key"
        self._columns = [
            (column, name, _column_type(column)[1], nullable(column, widened))
            for column, name in zip(table.columns, self.names)
        ]
        self.key_indexes = [i for i, c in enumerate(table.columns) if c.is_key]

    def _value(self, index: int, raw: Any) -> Any:
        column, _, convert, is_nullable = self._columns[index]
        if raw is None or raw is UNCHANGED_TOAST:
            if not is_nullable:
                raise NullInNotNull(column.name)
            return None
        if column.masked:
            return mask_text(raw)
        try:
            return convert(raw.decode("utf-8"))
        except NotRepresentable as exc:
            exc.column = column.name
            raise

    def row(self, values: TupleData) -> tuple[tuple[str, dict[str, Any]], list[str]]:
        """The ``Value`` record (as fastavro's ``(name, record)`` union notation) and the fields
        whose TOAST value was not sent (null in the record)."""
        if len(values) != len(self._columns):
            raise ValueError(f"tuple of {len(values)} columns for {len(self._columns)}-column table {self.table.table}")
        record = {}
        unchanged = []
        for i, raw in enumerate(values):
            name = self._columns[i][1]
            if raw is UNCHANGED_TOAST:
                unchanged.append(name)
            record[name] = self._value(i, raw)
        return (self.value_name, record), unchanged

    def key_row(self, values: TupleData) -> tuple[str, dict[str, Any]]:
        """The ``Key`` record of an old tuple that carries the key columns only ('K')."""
        return self.key_name, {self._columns[i][1]: self._value(i, values[i]) for i in self.key_indexes}
