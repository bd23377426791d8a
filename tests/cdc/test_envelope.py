"""One envelope: the fast path (RelationCodec and its generated writers) writes the reference's
events byte for byte, and the reference writes what fastavro writes."""

from __future__ import annotations

import io
import struct

import fastavro
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from core.settings import load_settings
from streams.cdc.envelope import (
    RelationCodec,
    SourceInfo,
    change_bodies,
    change_events,
    encode_body,
    envelope_schema,
    make_decoder,
    make_encoder,
    read_body,
    read_event,
    source_txn,
)
from streams.cdc.pgoutput import UNCHANGED_TOAST, Column, Delete, Insert, Relation, Update, decode
from streams.cdc.values import ValueConverter, text_array_json, timestamp_iso

SCHEMA = envelope_schema()
BOOL, INT2, INT4, INT8, OID, FLOAT4, FLOAT8 = 16, 21, 23, 20, 26, 700, 701
TEXT, VARCHAR, NUMERIC, JSONB, UUID, INTERVAL, DATE, INET = 25, 1043, 1700, 3802, 2950, 1186, 1082, 869
TS, TSTZ, TEXT_ARRAY, VARCHAR_ARRAY, INT_ARRAY, NUMERIC_ARRAY, TSTZ_ARRAY = 1114, 1184, 1009, 1015, 1007, 1231, 1185

texts = st.text(max_size=12)


def _ts(tz: bool) -> st.SearchStrategy[bytes]:
    frac = st.sampled_from(["", ".5", ".05", ".123456", ".000001", ".1", ".99"])
    plain = st.builds(
        lambda y, mo, d, h, mi, s, f: f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}{f}" + ("+00" if tz else ""),
        st.integers(1, 9999), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23), st.integers(0, 59),
        st.integers(0, 59), frac,
    )
    odd = st.sampled_from(
        ["infinity", "-infinity", "0001-01-01 00:00:00+00 BC" if tz else "0001-01-01 00:00:00 BC",
         "12345-01-01 00:00:00+00" if tz else "12345-01-01 00:00:00"]
    )
    return (plain | odd).map(str.encode)


def _pg_array(items: list[str | None]) -> bytes:
    def element(item: str | None) -> str:
        if item is None:
            return "NULL"
        if item == "" or item.upper() == "NULL" or any(c in item for c in ' "\\{},\t\n\r\v\f'):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return item

    return ("{" + ",".join(element(i) for i in items) + "}").encode()


RAW_BY_TYPE: dict[int, st.SearchStrategy[bytes]] = {
    BOOL: st.sampled_from([b"t", b"f"]),
    INT2: st.integers(-(2**15), 2**15 - 1).map(lambda i: str(i).encode()),
    INT4: st.integers(-(2**31), 2**31 - 1).map(lambda i: str(i).encode()),
    INT8: st.integers(-(2**63), 2**63 - 1).map(lambda i: str(i).encode()),
    OID: st.integers(0, 2**32 - 1).map(lambda i: str(i).encode()),
    FLOAT8: (st.floats(allow_nan=False).map(repr) | st.sampled_from(["NaN", "Infinity", "-Infinity"])).map(str.encode),
    FLOAT4: st.sampled_from([b"1.5", b"-0", b"3.4028235e+38"]),
    TEXT: texts.map(str.encode),
    VARCHAR: st.text(alphabet="abcXYZ\"\\é\x01 ", max_size=300).map(str.encode),
    NUMERIC: st.decimals(allow_nan=False, allow_infinity=False, places=3).map(lambda d: str(d).encode()),
    JSONB: st.sampled_from([b'{"a": [1, 2]}', b"{}", b'"\\u00e9"']),
    UUID: st.uuids().map(lambda u: str(u).encode()),
    INTERVAL: st.sampled_from([b"1 year 2 mons", b"3 days 04:05:06"]),
    DATE: st.sampled_from([b"2024-01-01", b"infinity"]),
    INET: st.sampled_from([b"10.0.0.1", b"::1/128"]),
    TS: _ts(False),
    TSTZ: _ts(True),
    TEXT_ARRAY: st.lists(st.none() | st.text(max_size=6), max_size=4).map(_pg_array)
    | st.sampled_from([b"{{a,b},{c,d}}", b"[0:1]={a,b}", b"{}", b'{"bullet one","bullet two"}', b'{"",a,"NULL",NULL}',
                       b'{"a,b","{x}",c}', b'{"x\\"y"}', b"{\xc3\xa9}"]),
    VARCHAR_ARRAY: st.lists(st.none() | st.text(alphabet="ab ,\"é{", max_size=4), max_size=4).map(_pg_array),
    INT_ARRAY: st.sampled_from([b"{1,-2,NULL}", b"{}", b"{{1},{2}}"]),
    NUMERIC_ARRAY: st.sampled_from([b"{1.10,2,NULL}", b"{0.0000001}"]),
    TSTZ_ARRAY: st.sampled_from([b'{"2024-01-01 00:00:00+00",NULL}']),
}
TYPES = sorted(RAW_BY_TYPE)


@st.composite
def relations(draw: st.DrawFn) -> Relation:
    ncols = draw(st.integers(0, 6))
    types = draw(st.lists(st.sampled_from(TYPES), min_size=ncols, max_size=ncols))
    keys = draw(st.lists(st.booleans(), min_size=ncols, max_size=ncols))
    names = [f"c{i}" if i % 3 else f"col é{i}\"" for i in range(ncols)]
    columns = tuple(Column(n, t, -1, k) for n, t, k in zip(names, types, keys, strict=True))
    return Relation(draw(st.integers(1, 2**32 - 1)), draw(st.sampled_from(["public", "s"])), draw(texts), "d", columns)


@st.composite
def tuples(draw: st.DrawFn, relation: Relation, toast: bool = True) -> list[object]:
    out: list[object] = []
    for column in relation.columns:
        kind = draw(st.sampled_from(["t", "t", "t", "n", "u"] if toast else ["t", "t", "t", "n"]))
        out.append(draw(RAW_BY_TYPE[column.type_oid]) if kind == "t" else None if kind == "n" else UNCHANGED_TOAST)
    return out


@st.composite
def messages(draw: st.DrawFn) -> tuple[Relation, Insert | Update | Delete]:
    relation = draw(relations())
    kind = draw(st.sampled_from(["I", "U", "UK", "UO", "DK", "DO"]))
    new = draw(tuples(relation))
    if kind == "I":
        return relation, Insert(relation.oid, new)
    old = draw(tuples(relation, toast=False))
    if kind == "UK" and draw(st.booleans()):
        old = [v if c.is_key else None for v, c in zip(new, relation.columns, strict=True)]  # same key
    if kind == "U":
        return relation, Update(relation.oid, None, None, new)
    if kind.startswith("U"):
        return relation, Update(relation.oid, kind[1], old, new)
    return relation, Delete(relation.oid, kind[1], old)


@hsettings(max_examples=400, deadline=None)
@given(
    case=messages(),
    lsn=st.integers(0, 2**63 - 1),
    commit_lsn=st.integers(0, 2**63 - 1),
    xid=st.integers(0, 2**32 - 1),
    commit_time=st.integers(0, 2**62),
)
def test_same_events_and_bytes_as_the_generic_path(
    case: tuple[Relation, Insert | Update | Delete], lsn: int, commit_lsn: int, xid: int, commit_time: int
) -> None:
    relation, message = case
    converter = ValueConverter()
    src = SourceInfo(lsn, commit_lsn, xid, commit_time)
    try:
        expected = change_events(converter, relation, message, src)
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            change_bodies(RelationCodec(relation, converter), message, lsn, source_txn(commit_lsn, xid, commit_time))
        return
    codec = RelationCodec(relation, converter)
    got = change_bodies(codec, message, lsn, source_txn(commit_lsn, xid, commit_time))
    assert [(op, key) for op, key, _ in got] == [(e.value["op"], e.key) for e in expected]
    for (_, _, body), event in zip(got, expected, strict=True):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, SCHEMA, event.value)
        assert body == encode_body(event.value) == buf.getvalue()
    # the generated row writer and the loop it stands for agree wherever the generated one applies
    for values in (message.new if not isinstance(message, Delete) else None, getattr(message, "old", None)):
        if values is not None and UNCHANGED_TOAST not in values:
            assert codec.row(values) == (codec.general_row(values)[0], ())


@hsettings(max_examples=200, deadline=None)
@given(case=messages(), lsn=st.integers(0, 2**63 - 1), commit_time=st.integers(0, 2**62))
def test_snapshot_reads_are_the_reference_read_events(
    case: tuple[Relation, Insert | Update | Delete], lsn: int, commit_time: int
) -> None:
    relation, message = case
    values = message.old if isinstance(message, Delete) else message.new
    if UNCHANGED_TOAST in values:  # a SELECT never yields one
        return
    converter = ValueConverter()
    src = SourceInfo(lsn, lsn, 0, commit_time, snapshot=True)
    try:
        event = read_event(converter, relation, values, src)
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            read_body(RelationCodec(relation, converter, snapshot=True), values, lsn, source_txn(lsn, 0, commit_time))
        return
    key, body = read_body(RelationCodec(relation, converter, snapshot=True), values, lsn, source_txn(lsn, 0, commit_time))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, event.value)
    assert event.value["op"] == "r" and event.value["source"]["snapshot"] is True
    assert (key, body) == (event.key, buf.getvalue())


def test_fast_converters_cover_the_common_shapes() -> None:
    """The bench/seed shapes take the fast paths (not the generic fallback)."""
    assert timestamp_iso(b"2024-01-02 03:04:05.5+00", True) == b"2024-01-02T03:04:05.500000+00:00"
    assert timestamp_iso(b"2024-01-02 03:04:05", False) == b"2024-01-02T03:04:05"
    assert timestamp_iso(b"infinity", True) is None
    assert text_array_json(b"{bullet one,NULL}") is None  # a space: PostgreSQL would have quoted it
    assert text_array_json(b"{a,NULL,b}") == b'["a",null,"b"]'
    assert text_array_json(b'{"bullet one","bullet two"}') == b'["bullet one","bullet two"]'
    assert text_array_json(b'{"",NULL,"NULL","a,b"}') == b'["",null,"NULL","a,b"]'
    assert text_array_json(b'{"a\\"b"}') is None


def test_tuple_of_the_wrong_width_is_refused() -> None:
    relation = Relation(1, "public", "t", "d", (Column("id", INT8, -1, True),))
    with pytest.raises(ValueError):
        RelationCodec(relation, ValueConverter()).row([b"1", b"2"])


def test_unchanged_toast_is_listed_and_absent() -> None:
    relation = Relation(1, "public", "t", "d", (Column("id", INT8, -1, True), Column("body", TEXT, -1, False)))
    [(op, key, body)] = change_bodies(
        RelationCodec(relation, ValueConverter()), Update(1, None, None, [b"7", UNCHANGED_TOAST]), 5, source_txn(6, 7, 8)
    )
    value = fastavro.schemaless_reader(io.BytesIO(body), SCHEMA)
    assert (op, key) == ("u", b'{"id":7}')
    assert value["after"] == {"id": 7} and value["unchanged_toast"] == ["body"] and value["before"] is None


def _pgoutput_tuple(values: list[object]) -> bytes:
    out = struct.pack("!H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        else:
            out += b"t" + struct.pack("!I", len(value)) + value  # type: ignore[arg-type]
    return out


@hsettings(max_examples=400, deadline=None)
@given(case=messages(), lsn=st.integers(0, 2**63 - 1), junk=st.binary(max_size=3))
def test_insert_writer_from_raw_bytes_matches_change_bodies(
    case: tuple[Relation, Insert | Update | Delete], lsn: int, junk: bytes
) -> None:
    """The reader's hot path (raw Insert bytes -> key + framed envelope) writes what change_bodies writes."""
    relation, message = case
    if not isinstance(message, Insert):
        return
    codec = RelationCodec(relation, ValueConverter())
    txn = source_txn(11, 12, 13)
    head = b"\x00HDR"
    frame = b"w" + bytes(24) + b"I" + struct.pack("!I", relation.oid) + b"N" + _pgoutput_tuple(message.new)
    assert decode(frame[25:]) == message  # the reference decoder reads the frame as the message
    try:
        [(op, key, body)] = change_bodies(codec, message, lsn, txn)
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            codec.insert(frame, 31, head, lsn, txn)
        return
    got = codec.insert(frame + junk, 31, head, lsn, txn)
    if UNCHANGED_TOAST in message.new:
        assert got is None  # left to the generic path
    else:
        assert got == (key, head + body) and op == "c"
    # a column count other than the relation's, or a cut-off tuple: the generic path decides
    wider = frame[:31] + struct.pack("!H", len(message.new) + 1) + frame[33:]
    assert codec.insert(wider, 31, head, lsn, txn) is None
    if len(frame) > 34:
        assert codec.insert(frame[:-1], 31, head, lsn, txn) is None


values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
rows = st.none() | st.dictionaries(st.text(min_size=1), values, max_size=6)


@hsettings(max_examples=200, deadline=None)
@given(
    op=st.sampled_from("cudtr"),
    before=rows,
    after=rows,
    toast=st.lists(st.text(), max_size=3),
    lsn=st.integers(0, 2**63 - 1),
    snapshot=st.booleans(),
)
def test_reference_writer_gives_fastavros_bytes(
    op: str, before: dict | None, after: dict | None, toast: list[str], lsn: int, snapshot: bool
) -> None:
    value = {
        "op": op, "before": before, "after": after, "unchanged_toast": toast, "key_columns": ["id"],
        "source": {"lsn": lsn, "commit_lsn": lsn, "xid": 5, "commit_time": 1, "schema": "s", "table": "t", "snapshot": snapshot},
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, value)
    assert encode_body(value) == buf.getvalue()


def test_encoder_round_trips_through_the_project_decoder() -> None:
    settings = load_settings()
    value = {
        "op": "c", "before": None, "after": {"asin": "B1", "price": "1.50", "n": None, "ok": True, "c": 3},
        "unchanged_toast": [], "key_columns": ["asin"],
        "source": {"lsn": 1, "commit_lsn": 2, "xid": 3, "commit_time": 4, "schema": "public", "table": "products", "snapshot": False},
    }
    encode = make_encoder(settings)
    assert encode.header is not None  # the serde's framing is a prefix: the reader writes bodies itself
    decoded = make_decoder(settings)(encode(value))
    assert decoded["after"] == value["after"] and decoded["op"] == "c"


def test_with_a_schema_registry_the_envelope_is_registered_under_each_cdc_topic() -> None:
    """A reader configured with a registry used to fail at start ("no topic to name the
    registry subject of cdc_change v1"): the envelope is registered per CDC topic."""
    import uuid

    from streams.serde.registry import registry_client
    from streams.topics import cdc_topics

    settings = load_settings().replace(schema_registry_url=f"mock://cdc-{uuid.uuid4().hex}")
    topics = [t.name for t in cdc_topics(settings, ("products", "product_snapshots", "alerts"))]
    encode = make_encoder(settings, topics)
    assert sorted(registry_client(settings.kafka.schema_registry_url).get_subjects()) == sorted(f"{t}-value" for t in topics)
    value = {
        "op": "u", "before": None, "after": {"asin": "B2", "price": "2.50"}, "unchanged_toast": [],
        "key_columns": ["asin"],
        "source": {"lsn": 5, "commit_lsn": 6, "xid": 7, "commit_time": 8, "schema": "public", "table": "products",
                   "snapshot": False},
    }
    framed = encode(value)
    assert framed[0] == 0  # the Confluent wire format
    assert make_decoder(settings)(framed)["after"] == value["after"]
    with pytest.raises(Exception, match="no topic to name the registry subject"):
        make_encoder(settings)  # a registry and no topic: says so, at construction


@hsettings(max_examples=400, deadline=None)
@given(case=messages(), lsn=st.integers(0, 2**63 - 1), junk=st.binary(max_size=3))
def test_update_without_old_tuple_from_raw_bytes_matches_change_bodies(
    case: tuple[Relation, Insert | Update | Delete], lsn: int, junk: bytes
) -> None:
    """The raw path of an Update without an old tuple (``op_head=codec.update_head``) writes what
    change_bodies writes for that Update; one with an old tuple is never given to it."""
    relation, message = case
    if not isinstance(message, (Insert, Update)):
        return
    update = Update(message.relation_oid, None, None, message.new)
    codec = RelationCodec(relation, ValueConverter())
    txn = source_txn(11, 12, 13)
    head = b"\x00HDR"
    frame = b"w" + bytes(24) + b"U" + struct.pack("!I", relation.oid) + b"N" + _pgoutput_tuple(update.new)
    assert decode(frame[25:]) == update
    try:
        [(op, key, body)] = change_bodies(codec, update, lsn, txn)
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            codec.insert(frame, 31, head, lsn, txn, codec.update_head)
        return
    got = codec.insert(frame + junk, 31, head, lsn, txn, codec.update_head)
    if UNCHANGED_TOAST in update.new:
        assert got is None  # left to the generic path, which lists the unchanged columns
    else:
        assert got == (key, head + body) and op == "u"
