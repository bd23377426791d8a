"""Typed change events: pgoutput text -> Avro values, per type, through a real Avro write and read.

Pure: no PostgreSQL, no Kafka (tests/cdc/test_typed_stream.py does the same on the real stack).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import fastavro
import pytest

from streams.cdc.envelope import SourceInfo, record_key
from streams.cdc.pgoutput import UNCHANGED_TOAST, Column, Delete, Insert, Relation, Update
from streams.cdc.typed import NotRepresentable, NullInNotNull, TableInfo, TypedRows, envelope_schema, parse_array
from streams.cdc.typed_events import TypedCodec
from streams.cdc.typed_schemas import TypedVersion, fingerprint
from streams.cdc.values import ValueConverter
from tests.cdc.test_typed_schema import column, table_of

UTC = timezone.utc


def float32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


#: (golden type, PostgreSQL's text output, the Avro value, what a reader gets back)
CASES: list[tuple[str, str, Any, Any]] = [
    ("smallint", "-32768", -32768, -32768),
    ("integer", "2147483647", 2147483647, 2147483647),
    ("bigint", "-9223372036854775808", -(2**63), -(2**63)),
    ("oid", "4294967295", 4294967295, 4294967295),
    ("real", "1.1", 1.1, float32(1.1)),  # float4 is a 32-bit float on both sides
    ("double_precision", "1.5e+300", 1.5e300, 1.5e300),
    ("double_precision", "-Infinity", -math.inf, -math.inf),
    ("numeric_10_2", "19.90", Decimal("19.90"), Decimal("19.90")),
    ("numeric_10_2", "-99999999.99", Decimal("-99999999.99"), Decimal("-99999999.99")),
    ("numeric_5_neg2", "12300", Decimal("12300"), Decimal("12300")),
    ("numeric_2_5", "0.00012", Decimal("0.00012"), Decimal("0.00012")),
    ("numeric", "NaN", "NaN", "NaN"),
    ("numeric", "123456789012345678901234567890.000001", "123456789012345678901234567890.000001",
     "123456789012345678901234567890.000001"),
    ("text", 'é "quoted" \\ back', 'é "quoted" \\ back', 'é "quoted" \\ back'),
    ("varchar_500", "B0ASIN0001", "B0ASIN0001", "B0ASIN0001"),
    ("char_3", "ab ", "ab ", "ab "),
    ("boolean", "t", True, True),
    ("boolean", "f", False, False),
    ("timestamptz", "2024-01-02 03:04:05.123456+00", datetime(2024, 1, 2, 3, 4, 5, 123456, UTC),
     datetime(2024, 1, 2, 3, 4, 5, 123456, UTC)),
    ("timestamptz", "1969-12-31 23:59:59.5+00", datetime(1969, 12, 31, 23, 59, 59, 500000, UTC),
     datetime(1969, 12, 31, 23, 59, 59, 500000, UTC)),
    ("timestamp", "2024-02-29 00:00:00.5", datetime(2024, 2, 29, 0, 0, 0, 500000), datetime(2024, 2, 29, 0, 0, 0, 500000)),
    ("date", "2024-02-29", date(2024, 2, 29), date(2024, 2, 29)),
    ("date", "0001-01-01", date(1, 1, 1), date(1, 1, 1)),
    ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
     UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    ("json", '{"b": 1, "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}'),
    ("jsonb", '{"a": [1, 2.50], "b": null}', '{"a": [1, 2.50], "b": null}', '{"a": [1, 2.50], "b": null}'),
    ("bytea", "\\x00ff10", b"\x00\xff\x10", b"\x00\xff\x10"),
    ("bytea", "a\\\\b\\000", b"a\\b\x00", b"a\\b\x00"),  # bytea_output = escape
    ("text_array", '{a,"b,c",NULL,"NULL","q\\"uote",""}',
     ["a", "b,c", None, "NULL", 'q"uote', ""], ["a", "b,c", None, "NULL", 'q"uote', ""]),
    ("text_array", "{}", [], []),
    ("numeric_10_2_array", "{1.10,NULL,-2.00}", [Decimal("1.10"), None, Decimal("-2.00")],
     [Decimal("1.10"), None, Decimal("-2.00")]),
    ("timestamptz_array", '{"2024-01-02 03:04:05+00"}', [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)],
     [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)]),
    ("interval", "1 day 02:00:00", "1 day 02:00:00", "1 day 02:00:00"),
    ("inet", "10.0.0.1/8", "10.0.0.1/8", "10.0.0.1/8"),
]


def round_trip(table: TableInfo, record: Any) -> dict[str, Any]:
    """``record`` (the Value union notation) written as ``after`` of a typed envelope and read back."""
    raw = envelope_schema(table)
    version = TypedVersion("t-value", 1, raw, fingerprint(raw), b"")
    data = version.encode({
        "op": "c", "before": None, "after": record, "unchanged_toast": [], "key_columns": ["id"],
        "source": {"lsn": 1, "commit_lsn": 2, "xid": 3, "commit_time": 4, "schema": "public", "table": "t",
                   "snapshot": False},
    })
    return fastavro.schemaless_reader(io.BytesIO(data), version.parsed, None)  # type: ignore[return-value]


@pytest.mark.parametrize(("kind", "text", "value", "decoded"), CASES, ids=[f"{c[0]}:{c[1][:20]}" for c in CASES])
def test_text_becomes_the_avro_value_and_reads_back(kind: str, text: str, value: Any, decoded: Any) -> None:
    table = table_of(column(kind, "c"))
    record, unchanged = TypedRows(table).row([b"1", text.encode()])
    assert unchanged == []
    assert record[1]["c"] == value or (isinstance(value, float) and math.isnan(value))
    assert type(record[1]["c"]) is type(value)
    back = round_trip(table, record)["after"]["c"]
    assert back == decoded
    assert type(back) is type(decoded)


def test_nan_in_a_double_is_kept() -> None:
    table = table_of(column("double_precision", "c"))
    assert math.isnan(round_trip(table, TypedRows(table).row([b"1", b"NaN"])[0])["after"]["c"])


@pytest.mark.parametrize(("kind", "text"), [
    ("numeric_10_2", "NaN"),
    ("numeric_10_2_array", "{1.00,NaN}"),
    ("timestamptz", "infinity"),
    ("timestamp", "-infinity"),
    ("timestamptz", "0044-03-15 12:00:00+00 BC"),
    ("date", "10000-01-01"),
    ("text_array", "{{a,b},{c,d}}"),
])
def test_values_a_type_cannot_carry_are_refused_naming_the_column(kind: str, text: str) -> None:
    with pytest.raises(NotRepresentable) as caught:
        TypedRows(table_of(column(kind, "c"))).row([b"1", text.encode()])
    assert caught.value.column == "c"


def test_array_text_parsing() -> None:
    assert parse_array("{}") == []
    assert parse_array("{NULL}") == [None]
    assert parse_array('{"NULL"}') == ["NULL"]
    assert parse_array('{"a\\\\b","{x}"," sp "}') == ["a\\b", "{x}", " sp "]
    assert parse_array("[0:2]={1,2,3}") == ["1", "2", "3"]
    with pytest.raises(ValueError):
        parse_array("not an array")


def test_unchanged_toast_is_null_and_listed_and_null_in_not_null_is_reported() -> None:
    table = table_of(column("text", "body", not_null=True), column("integer", "qty", not_null=True))
    rows = TypedRows(table)
    (_, record), unchanged = rows.row([b"1", UNCHANGED_TOAST, b"3"])
    assert record == {"id": 1, "body": None, "qty": 3} and unchanged == ["body"]
    assert round_trip(table, (rows.value_name, record))["after"]["body"] is None
    with pytest.raises(NullInNotNull) as caught:
        rows.row([b"1", b"x", None])
    assert caught.value.column == "qty"
    # made nullable, the same row is written
    assert TypedRows(table, frozenset({"qty"})).row([b"1", b"x", None])[0][1]["qty"] is None


def test_masked_columns_carry_the_hash_of_their_text() -> None:
    table = table_of(column("numeric_10_2", "price", masked=True))
    (_, record), _ = TypedRows(table).row([b"1", b"19.90"])
    assert record["price"] == hashlib.sha256(b"19.90").hexdigest()


# --- whole events: the envelope rules with typed rows ------------------------------------------
REL = Relation(
    7, "public", "t", "d",
    (Column("id", 20, -1, True), Column("c", 1700, ((10 << 16) | 2) + 4, False), Column("body", 25, -1, False)),
)
TABLE = table_of(column("numeric_10_2", "c"), column("text", "body", not_null=True))
SRC = SourceInfo(lsn=10, commit_lsn=20, xid=5, commit_time_us=1_700_000_000_000_000)


def codec() -> TypedCodec:
    raw = envelope_schema(TABLE)
    version = TypedVersion("t-value", 1, raw, fingerprint(raw), b"\xc3\x01" + fingerprint(raw))
    return TypedCodec(REL, TypedRows(TABLE), version, record_key(ValueConverter(), REL))


def decode(c: TypedCodec, data: bytes) -> dict[str, Any]:
    assert data.startswith(c.version.header)
    return fastavro.schemaless_reader(  # type: ignore[return-value]
        io.BytesIO(data[len(c.version.header):]), c.version.parsed, None, return_record_name=True
    )


def test_events_use_the_generic_record_key_and_typed_rows() -> None:
    c = codec()
    [(op, key, value)] = c.changes(Insert(7, [b"5", b"19.90", b"hello"]), SRC)
    assert op == "c" and key == b'{"id":5}'
    event = decode(c, value)
    assert event["after"] == ("insights.cdc.public.t.Value", {"id": 5, "c": Decimal("19.90"), "body": "hello"})
    assert event["source"]["commit_time"] == datetime.fromtimestamp(1_700_000_000, UTC)
    assert event["source"]["lsn"] == 10 and event["key_columns"] == ["id"]


def test_a_delete_with_the_old_key_only_has_the_key_record_before() -> None:
    c = codec()
    [(op, key, value)] = c.changes(Delete(7, "K", [b"5", None, None]), SRC)
    event = decode(c, value)
    assert op == "d" and key == b'{"id":5}'
    assert event["before"] == ("insights.cdc.public.t.Key", {"id": 5}) and event["after"] is None


def test_a_key_change_is_a_delete_of_the_old_key_and_an_update_of_the_new() -> None:
    c = codec()
    events = c.changes(Update(7, "K", [b"5", None, None], [b"6", b"1.00", UNCHANGED_TOAST]), SRC)
    assert [(op, key) for op, key, _ in events] == [("d", b'{"id":5}'), ("u", b'{"id":6}')]
    update = decode(c, events[1][2])
    assert update["after"][1] == {"id": 6, "c": Decimal("1.00"), "body": None}
    assert update["unchanged_toast"] == ["body"]


def test_reads_and_truncates() -> None:
    c = codec()
    key, value = c.read([b"5", None, b"x"], SourceInfo(1, 1, 0, 0, snapshot=True))
    event = decode(c, value)
    assert key == b'{"id":5}' and event["op"] == "r" and event["source"]["snapshot"] is True
    assert decode(c, c.truncate(SRC))["op"] == "t"
