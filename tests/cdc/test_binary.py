"""pgoutput binary mode (INSIGHTS_CDC_PGOUTPUT_BINARY): the same events as text mode, byte for byte.

On the real server, for every column type of the seed's tables and of the brief (int2/4/8, oid,
float4/8, numeric with and without precision, bool, text/varchar/bpchar/"char"/name, json,
jsonb, uuid, date, timestamp, timestamptz, interval, inet, cidr, bytea, arrays of several of
them with NULLs, quoting, two dimensions and bounds, an enum, domains) and their edge values
(NaN, infinities, BC dates, years past 9999, -0, subnormals, micro-seconds, empty strings):

* the same rows read twice from one slot with ``pg_logical_slot_peek_binary_changes`` (the
  walsender's pgoutput, in text and in binary), with the reader's session settings: every
  binary value, turned into text by ``streams.cdc.binary``, equals the text PostgreSQL sent;
  and the envelope of each row (reference path and generated fast path) is the same bytes;
* a reader running with ``cdc_pgoutput_binary=true`` publishes the same events (keys,
  partitions, envelopes with their LSNs) as one in text mode reading the same WAL from its own slot;
* an unsupported type stops a binary-mode reader with one line naming the column and the fix.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc.binary import UnsupportedBinaryType, tuple_converter
from streams.cdc.envelope import RelationCodec, SourceInfo, change_bodies, change_events, encode_body, source_txn
from streams.cdc.errors import BinaryModeError
from streams.cdc.healing import stream_lost
from streams.cdc.pgoutput import Binary, Insert, Relation, decode
from streams.cdc.values import ValueConverter
from streams.cdc import reader as reader_module
from streams.cdc.reader import CdcReader
from tests.cdc.conftest import EventReader, drop_slot_when_free, running_reader

pytestmark = pytest.mark.integration

#: (type, SQL literals): edge values of every type
TYPES: list[tuple[str, list[str]]] = [
    ("boolean", ["true", "false"]),
    ("smallint", ["0", "-32768", "32767"]),
    ("integer", ["0", "-2147483648", "2147483647", "42"]),
    ("bigint", ["0", "-9223372036854775808", "9223372036854775807", "9007199254740993"]),
    ("oid", ["0", "4294967295"]),
    ("real", ["0", "-0", "1.5", "0.1", "1e-10", "123456", "1234567", "3.4028235e+38", "1e-45", "-2.5e-5",
              "0.0001", "100000", "'NaN'", "'Infinity'", "'-Infinity'"]),
    ("double precision", ["0", "-0", "0.1", "1e15", "1e14", "123456789012345", "1.7976931348623157e308", "5e-324",
                          "1e-5", "0.0001", "-2.5", "100", "1e16", "12345678901234567890", "'NaN'",
                          "'Infinity'", "'-Infinity'"]),
    ("numeric", ["0", "-0.0001", "1.50", "123456789.000000001", "1e30", "0.00001", "10000", "-99999999.99",
                 "0.000000000000000000001", "1.0000", "'NaN'", "'Infinity'", "'-Infinity'"]),
    ("numeric(10,2)", ["9.99", "-12345678.90", "0.00", "10000000.01"]),
    ("numeric(3,2)", ["0.99", "0.01", "4.50"]),
    ("numeric(5,-2)", ["12345"]),
    ("text", ["''", "'é \"q\", {b} \\ back'", "'NULL'", "'line\nbreak\ttab'"]),
    ("character varying(500)", ["'Product title 7'", "''", "'ü€😀'"]),
    ("character(5)", ["'ab'", "'abcde'"]),
    ('"char"', ["'a'", "''", "'\\'"]),
    ("name", ["'a name'"]),
    ("json", ["'{\"a\": 1,  \"b\":[1,2] }'", "'null'", "'\"é\"'"]),
    ("jsonb", ["'{\"a\": [1, 2.50, null], \"é\": {\"b\": true}}'", "'[]'", "'1e400'", "'\"x\\\\u0000y\"'"]),
    ("uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000002'"]),
    ("date", ["'2024-02-29'", "'0001-01-01'", "'0001-12-31 BC'", "'4713-11-24 BC'", "'10000-01-01'",
              "'5874897-12-31'", "'1999-12-31'", "'infinity'", "'-infinity'"]),
    ("timestamp", ["'2024-02-03 04:05:06.123456'", "'1999-12-31 23:59:59.999999'", "'0044-03-15 12:00:00 BC'",
                   "'2000-01-01 00:00:00'", "'1970-01-01 00:00:00.5'", "'12000-01-01 00:00:00.01'",
                   "'294276-12-31 23:59:59.999999'", "'infinity'", "'-infinity'"]),
    ("timestamp with time zone", ["'2024-02-03 04:05:06.123456+00'", "'1999-12-31 23:59:59.999999+00'",
                                  "'2024-06-01 12:00:00+05:30'", "'0044-03-15 12:00:00+00 BC'",
                                  "'2000-01-01 00:00:00+00'", "'12000-01-01 00:00:00+00'", "'infinity'",
                                  "'-infinity'"]),
    ("interval", ["'1 day 02:03:04.5'", "'-3 mons'", "'00:00:00'", "'1 year 2 mons 3 days 04:05:06.789'",
                  "'-1 days +02:00:00'", "'1 mon -1 days'", "'-00:00:00.000001'", "'178000000 years'",
                  "'-1 years -2 mons +3 days -04:05:06'", "'1 year -1 mons'", "'100 hours'", "'-1 days'"]),
    ("inet", ["'10.1.2.3/16'", "'::1'", "'192.168.0.1'", "'::ffff:1.2.3.4'", "'2001:db8::1/64'",
              "'fe80::1:0:0:1'", "'0.0.0.0/0'", "'::'", "'1::'", "'1:0:0:2:0:0:0:3'", "'::1.2.3.4'"]),
    ("cidr", ["'10.1.0.0/16'", "'2001:db8::/32'", "'10.0.0.1/32'"]),
    ("bytea", ["'\\x00ff10'", "'\\x'", "'abc'"]),
    ("text[]", ["'{a,\"b,c\",NULL,\"NULL\",\"\",\"é \\\"q\\\" \\\\ {x}\",\"sp ace\"}'", "'{}'",
                "'{{a,b},{c,d}}'", "'[0:1]={x,y}'", "'{null}'", "'{\"nULl\"}'"]),
    ("integer[]", ["'{1,NULL,-3}'", "'{}'"]),
    ("numeric(10,2)[]", ["'{1.50,NULL,-2}'"]),
    ("timestamp with time zone[]", ["'{\"2024-01-01 00:00:00+00\",\"1999-12-31 23:59:59.5+00\"}'"]),  # (infinity: see the report)
    ("jsonb[]", ["ARRAY['{\"a\": 1}'::jsonb, '[]']"]),
    ("uuid[]", ["'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'"]),
    ("character varying(50)[]", ["'{\"x y\",z}'"]),
    ("date[]", ["'{2024-01-01,NULL}'"]),
    ("boolean[]", ["'{t,f}'"]),
    ("mood", ["'happy'", "'so so'"]),
    ("money_like", ["12.345"]),  # a domain over numeric(10,3)
    ("mood[]", ["'{happy,\"so so\"}'"]),
    ("short_text", ["'dom'"]),  # a domain over varchar(10)
]

SESSION = "SET DateStyle = ISO; SET TimeZone = UTC; SET IntervalStyle = postgres"


def _peek(conn: psycopg.Connection[Any], slot: str, publication: str, binary: bool) -> list[bytes]:
    options = ["proto_version", "1", "publication_names", publication] + (["binary", "true"] if binary else [])
    rows = conn.execute(
        sql.SQL("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, {})").format(
            sql.SQL(", ").join(sql.Placeholder() * len(options))),
        [slot, *options],
    ).fetchall()
    return [bytes(r[0]) for r in rows]


def _describe(conn: psycopg.Connection[Any]) -> Any:
    def describe(oid: int) -> Any:
        row = conn.execute(
            "SELECT typtype::text, typbasetype::int8, CASE WHEN typcategory = 'A' THEN typelem::int8 ELSE 0 END"
            "  FROM pg_type WHERE oid = %s", (oid,),
        ).fetchone()
        return None if row is None else tuple(row)

    return describe


@pytest.fixture
def every_type(pg: psycopg.Connection[Any]) -> str:
    """A schema with one table per type (id, v), a row per literal and a NULL row; its publication."""
    schema = f"bin_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(schema)
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    pg.execute(sql.SQL("CREATE TYPE {}.mood AS ENUM ('happy', 'so so')").format(ident))
    pg.execute(sql.SQL("CREATE DOMAIN {}.money_like AS numeric(10,3)").format(ident))
    pg.execute(sql.SQL("CREATE DOMAIN {}.short_text AS varchar(10) NOT NULL").format(ident))
    pg.execute(sql.SQL("SET search_path = {}, public").format(ident))
    for i, (type_name, _) in enumerate(TYPES):
        pg.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v {})").format(
            sql.Identifier(schema, f"t{i}"), sql.SQL(type_name)))
    pg.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(schema)))
    pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (schema,))
    for i, (type_name, literals) in enumerate(TYPES):
        table = sql.Identifier(schema, f"t{i}")
        for n, literal in enumerate(literals):
            pg.execute(sql.SQL("INSERT INTO {} VALUES (%s, {})").format(table, sql.SQL(literal)), (n,))
        if type_name != "short_text":
            pg.execute(sql.SQL("INSERT INTO {} VALUES (%s, NULL)").format(table), (len(literals),))
    return schema


def test_binary_values_turn_into_the_text_postgresql_sends_for_every_type(
    pg: psycopg.Connection[Any], every_type: str
) -> None:
    schema = every_type
    pg.execute(SESSION)
    text_frames = _peek(pg, schema, schema, binary=False)
    binary_frames = _peek(pg, schema, schema, binary=True)
    assert len(text_frames) == len(binary_frames) > len(TYPES)
    describe = _describe(pg)
    converter = ValueConverter()
    relations: dict[int, Relation] = {}
    compared: dict[str, int] = {}
    sent_binary: set[str] = set()
    src = SourceInfo(10, 20, 3, 1_700_000_000_000_000)
    for text_raw, binary_raw in zip(text_frames, binary_frames):
        text_msg, binary_msg = decode(text_raw), decode(binary_raw)
        if isinstance(text_msg, Relation):
            assert binary_msg == text_msg
            relations[text_msg.oid] = text_msg
            continue
        if not isinstance(text_msg, Insert):
            continue
        assert isinstance(binary_msg, Insert)
        relation = relations[text_msg.relation_oid]
        type_name = TYPES[int(relation.name[1:])][0]
        if any(isinstance(v, Binary) for v in binary_msg.new):
            sent_binary.add(type_name)
        as_text = tuple_converter(relation.columns, describe)(binary_msg.new)
        assert as_text == text_msg.new, (type_name, binary_msg.new, text_msg.new)
        # and so the envelopes are the same bytes, on the reference and on the generated path
        converted = Insert(relation.oid, as_text)
        assert [encode_body(e.value) for e in change_events(converter, relation, converted, src)] == [
            encode_body(e.value) for e in change_events(converter, relation, text_msg, src)
        ]
        codec = RelationCodec(relation, converter)
        txn = source_txn(20, 3, 1_700_000_000_000_000)
        assert change_bodies(codec, converted, 10, txn) == change_bodies(codec, text_msg, 10, txn)
        compared[type_name] = compared.get(type_name, 0) + 1
    for type_name, literals in TYPES:
        assert compared.get(type_name) == len(literals) + (type_name != "short_text"), type_name
        assert type_name in sent_binary, f"{type_name} was not sent in binary"


def test_a_type_without_a_converter_is_named(pg: psycopg.Connection[Any]) -> None:
    describe = _describe(pg)
    point = pg.execute("SELECT 'point'::regtype::oid::int").fetchone()[0]
    from streams.cdc.pgoutput import Column

    with pytest.raises(UnsupportedBinaryType) as caught:
        tuple_converter([Column("id", 23, -1, True), Column("where", point, -1, False)], describe)
    assert caught.value.column == "where"


# --- the reader in binary mode --------------------------------------------------------------------
def test_a_binary_mode_reader_publishes_the_same_events_as_a_text_mode_one(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen_binary: list[int] = []

    def counting(columns: Any, describe: Any) -> Any:
        convert = tuple_converter(columns, describe)
        return lambda values: seen_binary.append(sum(type(v) is Binary for v in values)) or convert(values)

    monkeypatch.setattr(reader_module, "tuple_converter", counting)
    tag = uuid.uuid4().hex[:8]
    binary = cdc_settings.replace(cdc_pgoutput_binary=True, cdc_slot_name=f"bin_{tag}", cdc_publication=f"bin_{tag}",
                                  topic_prefix=f"bin-{tag}")
    CdcReader(cdc_settings).setup()
    CdcReader(binary).setup()  # both slots before the changes: both read the same WAL
    q = lambda text: sql.SQL(text).format(s=sql.Identifier(cdc_schema))  # noqa: E731
    try:
        pg.execute(q("INSERT INTO {s}.products (asin, title, brand, description) VALUES ('X1', 'Mug é', 'Acme', 'd')"))
        pg.execute(q("UPDATE {s}.products SET title = 'Cup' WHERE asin = 'X1'"))
        pg.execute(q("INSERT INTO {s}.product_snapshots (id, asin, price, rating, scraped_at, bullet_points) "
                     "VALUES (1, 'X1', 9.99, 4.5, '2024-01-15 10:00:00.25+00', '{{\"a b\",c}}')"))
        pg.execute(q("DELETE FROM {s}.products WHERE asin = 'X1'"))
        published = {}
        for settings in (cdc_settings, binary):
            with running_reader(settings):
                readers = [EventReader(settings, t) for t in ("products", "product_snapshots")]
                published[settings.cdc.pgoutput_binary] = readers[0].read(3) + readers[1].read(1)
                for r in readers:
                    r.close()
    finally:
        drop_slot_when_free(pg_dsn, binary)
    assert published[True] == published[False]  # key, partition, decoded envelope (LSNs included)
    assert len(seen_binary) == 4 and all(seen_binary), seen_binary  # the binary reader did get binary values
    snap = published[True][3][2]["after"]
    assert snap["price"] == "9.99" and snap["scraped_at"] == "2024-01-15T10:00:00.250000+00:00"
    assert snap["bullet_points"] == '["a b","c"]'


def test_a_binary_mode_reader_stops_with_one_line_on_a_type_it_cannot_decode(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any],
) -> None:
    pg.execute(sql.SQL("ALTER TABLE {} ADD COLUMN spot point").format(sql.Identifier(cdc_schema, "products")))
    binary = cdc_settings.replace(cdc_pgoutput_binary=True)
    CdcReader(binary).setup()
    pg.execute(sql.SQL("INSERT INTO {} (asin, title, spot) VALUES ('P1', 't', '(1,2)')").format(
        sql.Identifier(cdc_schema, "products")))
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)
    timer.start()
    try:
        with pytest.raises(BinaryModeError) as caught:
            CdcReader(binary, stop=stop).run()
    finally:
        timer.cancel()
    assert not stream_lost(caught.value)
    assert "products.spot is of type point" in str(caught.value)
    assert "INSIGHTS_CDC_PGOUTPUT_BINARY=false" in str(caught.value)
