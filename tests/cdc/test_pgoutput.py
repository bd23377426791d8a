"""The pure pgoutput decoder, on hand-built protocol bytes."""

from __future__ import annotations

import struct

import pytest

from streams.cdc.errors import DecodeError
from streams.cdc.lsn import format_lsn, parse_lsn
from streams.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Binary,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Relation,
    RelationCache,
    Truncate,
    Update,
    decode,
)
from streams.cdc.transport import Keepalive, XLogData, parse_copy_message, standby_status


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def tup(*cols: object) -> bytes:
    out = struct.pack("!H", len(cols))
    for col in cols:
        if col is None:
            out += b"n"
        elif col is UNCHANGED_TOAST:
            out += b"u"
        else:
            raw = str(col).encode()
            out += b"t" + struct.pack("!I", len(raw)) + raw
    return out


def relation_msg(oid: int = 16384, cols: tuple[tuple[str, int, bool], ...] = (("id", 20, True), ("body", 25, False))) -> bytes:
    out = b"R" + struct.pack("!I", oid) + cstr("public") + cstr("t") + b"d" + struct.pack("!H", len(cols))
    for name, type_oid, key in cols:
        out += bytes([1 if key else 0]) + cstr(name) + struct.pack("!Ii", type_oid, -1)
    return out


def test_begin_and_commit() -> None:
    begin = decode(b"B" + struct.pack("!QqI", 0x1_0000_0010, 777, 42))
    assert begin == Begin(final_lsn=0x1_0000_0010, commit_time_us=777, xid=42)
    commit = decode(b"C" + struct.pack("!BQQq", 0, 10, 20, 777))
    assert commit == Commit(flags=0, commit_lsn=10, end_lsn=20, commit_time_us=777)


def test_relation_with_key_flags() -> None:
    rel = decode(relation_msg())
    assert isinstance(rel, Relation)
    assert (rel.namespace, rel.name, rel.replica_identity) == ("public", "t", "d")
    assert rel.key_columns == ("id",)
    assert [c.type_oid for c in rel.columns] == [20, 25]


def test_null_unchanged_toast_and_text_stay_distinct() -> None:
    msg = decode(b"U" + struct.pack("!I", 16384) + b"N" + tup("1", UNCHANGED_TOAST) )
    assert isinstance(msg, Update)
    assert msg.new == [b"1", UNCHANGED_TOAST]
    insert = decode(b"I" + struct.pack("!I", 16384) + b"N" + tup("2", None))
    assert isinstance(insert, Insert) and insert.new == [b"2", None]
    with pytest.raises(TypeError):
        bool(UNCHANGED_TOAST)


def test_update_with_old_key_and_delete() -> None:
    msg = decode(b"U" + struct.pack("!I", 1) + b"K" + tup("1", None) + b"N" + tup("2", "x"))
    assert isinstance(msg, Update)
    assert msg.old_kind == "K" and msg.old == [b"1", None] and msg.new == [b"2", b"x"]
    delete = decode(b"D" + struct.pack("!I", 1) + b"O" + tup("1", "x"))
    assert delete == Delete(1, "O", [b"1", b"x"])


def test_truncate_and_logical_message() -> None:
    trunc = decode(b"T" + struct.pack("!IB", 2, 1) + struct.pack("!II", 5, 6))
    assert trunc == Truncate(options=1, relation_oids=(5, 6))
    msg = decode(b"M" + b"\x01" + struct.pack("!Q", 99) + cstr("p") + struct.pack("!I", 3) + b"abc")
    assert msg == LogicalMessage(True, 99, "p", b"abc")


def test_malformed_and_unknown_messages_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!H", 1) + b"t\x00\x00")
    with pytest.raises(DecodeError):
        decode(b"Z")
    with pytest.raises(DecodeError):
        decode(b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!H", 1) + b"b")


def test_relation_cache_detects_schema_change() -> None:
    cache = RelationCache()
    first = decode(relation_msg())
    assert cache.update(first) is False  # type: ignore[arg-type]
    assert cache.update(first) is False  # type: ignore[arg-type]
    changed = decode(relation_msg(cols=(("id", 20, True), ("body", 25, False), ("extra", 23, False))))
    assert cache.update(changed) is True  # type: ignore[arg-type]
    assert len(cache.get(16384).columns) == 3
    with pytest.raises(DecodeError):
        cache.get(1)


def test_replication_framing() -> None:
    frame = parse_copy_message(b"w" + struct.pack("!QQQ", 1, 2, 3) + b"payload")
    assert isinstance(frame, XLogData) and bytes(frame.payload) == b"payload" and frame.wal_start == 1
    keep = parse_copy_message(b"k" + struct.pack("!QQB", 9, 8, 1))
    assert keep == Keepalive(9, 8, True)
    status = standby_status(5, 4, 4, 946_684_800_000_000 + 10)
    assert status[:1] == b"r" and struct.unpack("!QQQQB", status[1:]) == (5, 4, 4, 10, 0)


def test_lsn_text_round_trip() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("0/1A2B")) == "0/1A2B"


def test_binary_columns_decode_as_binary_values_never_as_text() -> None:
    # an Insert of (int4 7 in binary, NULL, 't' text): kind 'b' keeps its bytes apart from text
    payload = b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!H", 3)
    payload += b"b" + struct.pack("!I", 4) + struct.pack("!i", 7) + b"n" + b"t" + struct.pack("!I", 1) + b"x"
    message = decode(payload)
    assert message == Insert(5, [Binary(struct.pack("!i", 7)), None, b"x"])
