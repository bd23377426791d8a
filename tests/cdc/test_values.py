"""Text tuple values to Python values and to the envelope, and change events from messages."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from streams.cdc.envelope import SourceInfo, change_events
from streams.cdc.pgoutput import UNCHANGED_TOAST, Column, Delete, Insert, Relation, Update
from streams.cdc.values import ValueConverter

NUMERIC, TSTZ, JSONB, TEXT_ARRAY, INET, INTERVAL, INT8, BOOL, FLOAT8, TEXT = 1700, 1184, 3802, 1009, 869, 1186, 20, 16, 701, 25


def test_python_values_by_type_oid() -> None:
    c = ValueConverter()
    assert c.to_python(NUMERIC, b"12.30") == Decimal("12.30")
    assert c.to_python(TSTZ, b"2024-01-02 03:04:05.5+00") == datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=timezone.utc)
    assert c.to_python(JSONB, b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert c.to_python(TEXT_ARRAY, b'{a,"b c",NULL}') == ["a", "b c", None]
    assert c.to_python(INET, b"10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert c.to_python(INTERVAL, b"3 days 04:05:06") == timedelta(days=3, hours=4, minutes=5, seconds=6)
    assert c.to_python(999_999, b"an enum label") == "an enum label"


def test_envelope_values_are_lossless_and_typed() -> None:
    c = ValueConverter()
    assert c.to_envelope(NUMERIC, b"12345678901234567890.12") == "12345678901234567890.12"
    assert c.to_envelope(INT8, b"9007199254740993") == 9007199254740993
    assert c.to_envelope(BOOL, b"f") is False
    assert c.to_envelope(FLOAT8, b"1.5") == 1.5
    assert c.to_envelope(TSTZ, b"2024-01-02 03:04:05+00") == "2024-01-02T03:04:05+00:00"
    assert c.to_envelope(TSTZ, b"infinity") == "infinity"
    assert json.loads(c.to_envelope(TEXT_ARRAY, b'{a,NULL}')) == ["a", None]  # type: ignore[arg-type]
    assert json.loads(c.to_envelope(1231, b"{1.10,2}")) == ["1.10", "2"]  # type: ignore[arg-type]
    assert c.to_envelope(INTERVAL, b"1 year 2 mons") == "1 year 2 mons"


REL = Relation(
    1, "public", "snaps", "d",
    (Column("id", INT8, -1, True), Column("scraped_at", TSTZ, -1, True), Column("body", TEXT, -1, False)),
)
SRC = SourceInfo(lsn=10, commit_lsn=20, xid=5, commit_time_us=1)


def test_unchanged_toast_is_absent_and_listed_never_a_placeholder() -> None:
    [event] = change_events(
        ValueConverter(), REL, Update(1, None, None, [b"7", b"2024-01-01 00:00:00+00", UNCHANGED_TOAST]), SRC
    )
    assert event.value["op"] == "u"
    assert "body" not in event.value["after"]
    assert event.value["unchanged_toast"] == ["body"]
    assert event.key == b'{"id":7,"scraped_at":"2024-01-01T00:00:00+00:00"}'


def test_null_is_a_value_and_delete_carries_only_the_key() -> None:
    [ins] = change_events(ValueConverter(), REL, Insert(1, [b"7", b"2024-01-01 00:00:00+00", None]), SRC)
    assert ins.value["after"]["body"] is None and ins.value["unchanged_toast"] == []
    [dele] = change_events(ValueConverter(), REL, Delete(1, "K", [b"7", b"2024-01-01 00:00:00+00", None]), SRC)
    assert dele.value["op"] == "d" and dele.value["after"] is None
    assert dele.value["before"] == {"id": 7, "scraped_at": "2024-01-01T00:00:00+00:00"}
    assert dele.key == ins.key


def test_key_change_becomes_delete_of_old_key_and_update_of_new() -> None:
    old = [b"7", b"2024-01-01 00:00:00+00", None]
    new = [b"8", b"2024-01-01 00:00:00+00", b"x"]
    d, u = change_events(ValueConverter(), REL, Update(1, "K", old, new), SRC)
    assert (d.value["op"], u.value["op"]) == ("d", "u")
    assert d.key == b'{"id":7,"scraped_at":"2024-01-01T00:00:00+00:00"}'
    assert u.key == b'{"id":8,"scraped_at":"2024-01-01T00:00:00+00:00"}'
    assert u.value["after"]["body"] == "x"
