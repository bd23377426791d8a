"""Typed change events on the real stack: PostgreSQL -> reader (INSIGHTS_CDC_FORMAT=typed) -> Kafka -> decode.

* every column type of the seed's tables (their very DDL, ddl/0001-0010) round-trips: the full
  snapshot, streamed inserts, updates and deletes, and an incremental snapshot, decoded with
  the schema each event names, equal the table's rows as psycopg SELECTs them;
* ``ALTER TABLE ADD COLUMN`` mid-stream registers a compatible v2 and the next change uses it;
* an incompatible change (a column's type to text, a NOT NULL column dropped) stops the reader
  with IncompatibleSchemaChangeError (exit code 4) before anything is published with it, or,
  with INSIGHTS_CDC_TYPED_ALLOW_INCOMPATIBLE, registers it and goes on;
* with a registry (confluent-kafka's mock://), versions live there and events are Confluent-framed;
* a registry over real HTTP that goes away and comes back is waited out in place (one line each
  way, every change once, in order); one that refuses the credentials (401) ends the reader.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from core.paths import REPO_ROOT
from core.settings import Settings
from streams.cdc import incremental
from streams.cdc.errors import IncompatibleSchemaChangeError, RegistryRefusedError
from streams.cdc.healing import stream_lost
from streams.cdc.reader import CdcReader
from streams.cdc.snapshot import run_snapshot
from streams.cdc.typed_schemas import TypedDecoder, make_decoder
from streams.cdc.values import ValueConverter
from streams.serde.registry import registry_client
from streams.topics import cdc_topic_name
from tests.cdc.conftest import running_reader, wait_for
from tests.cdc.http_registry import HttpRegistry
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.fix_services import child_env

pytestmark = pytest.mark.integration

MIGRATION = REPO_ROOT / "ddl" / "0022_cdc_schemas.sql"

#: the seed's tables in an order their foreign keys allow inserting in
SEED_TABLES = [
    "products", "competitive_groups", "competitive_group_members", "competitive_analyses", "alert_rules", "alerts",
    "product_snapshots", "product_features", "api_keys", "api_usage_logs", "task_executions",
]


@pytest.fixture
def schemas_table(pg: psycopg.Connection[Any], pg_template: str) -> None:
    """The CDC tests' databases are not migrated: apply the one migration typed events need.

    ``pg_template`` (the migrated template) first: its migration creates the cluster-wide
    roles this one grants to; on a fresh cluster nothing else may have made them yet."""
    pg.execute(MIGRATION.read_text(encoding="utf-8"))


def typed(settings: Settings, **extra: Any) -> Settings:
    return settings.replace(cdc_format="typed", **extra)


class Topics:
    """Every event of some CDC topics, from the beginning, decoded with the schema each names."""

    def __init__(self, settings: Settings, tables: list[str], decoder: TypedDecoder) -> None:
        self.decode = decoder
        self.topics = {cdc_topic_name(settings, t, settings.cdc.schema_name): t for t in tables}
        self.consumer = Consumer(settings.kafka.client_config(**{
            "group.id": f"typed-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
        }))
        assignment = []
        for topic in self.topics:
            meta = self.consumer.list_topics(topic, timeout=10)
            assignment += [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
        self.consumer.assign(assignment)
        #: table -> [(key, raw value, decoded)] in partition order
        self.events: dict[str, list[tuple[bytes | None, bytes, dict[str, Any]]]] = {t: [] for t in tables}

    def poll(self) -> None:
        for msg in self.consumer.consume(10_000, timeout=0.3):
            assert not msg.error(), msg.error()
            self.events[self.topics[msg.topic()]].append((msg.key(), msg.value(), self.decode(msg.value())))

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topics_of() -> Iterator[Any]:
    opened: list[Topics] = []

    def open_(settings: Settings, tables: list[str], decoder: TypedDecoder) -> Topics:
        opened.append(Topics(settings, tables, decoder))
        return opened[-1]

    yield open_
    for t in opened:
        t.close()


# --- the seed's tables, every column filled -------------------------------------------------------
def _varchar(n: int, variant: int) -> str:
    return (("B0é\"x,{}\\" if variant == 1 else "B1ü'y;[]/") + "z" * n)[:n]


def _literal(type_name: str, variant: int) -> str:
    """A SQL literal of ``type_name`` (format_type), two distinct variants; values that stretch the
    text forms (quotes, commas, braces, backslashes, non-ASCII, micro-seconds, NULL array items)."""
    if type_name.startswith("character varying("):
        n = int(type_name[len("character varying("):-1])
        return sql.Literal(_varchar(n, variant)).as_string(None)
    literals = {
        "text": ["'é \"quoted\", {braces} \\ back'", "'second'"],
        "text[]": [r"""'{a,"b,c",NULL,"é \"q\" \\ {x}"}'""", "'{}'"],
        "jsonb": ["'{\"a\": [1, 2.50, null], \"é\": {\"b\": true}}'", "'[]'"],
        "integer": ["1", "2"],
        "bigint": ["9007199254740993", "9007199254740994"],
        "boolean": ["true", "false"],
        "timestamp with time zone": ["'2024-02-03 04:05:06.123456+00'", "'1999-12-31 23:59:59.999999+00'"],
        "interval": ["'1 day 02:03:04.5'", "'-3 mons'"],
        "uuid": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000002'"],
        "inet": ["'10.1.2.3/16'", "'::1'"],
    }
    if type_name.startswith("numeric("):
        p, s = (int(x) for x in type_name[len("numeric("):-1].split(","))
        if p - s <= 1:  # rating, confidence_score: CHECKed between 0 and 1 or 5
            return ["0.99", "0.01"][variant - 1]
        return ("-" if variant == 1 else "") + "9" * (p - s) + "." + "9" * s
    return literals[type_name][variant - 1]


def _columns(conn: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, str, bool, bool]]:
    """(name, format_type, NOT NULL, part of a unique key) of each column."""
    return conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisunique
                                                  AND a.attnum = ANY (i.indkey))
          FROM pg_attribute a
         WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (f'"{schema}"."{table}"',),
    ).fetchall()


def _insert_rows(conn: psycopg.Connection[Any], schema: str) -> None:
    """Per table a full row (every column set) and a sparse one (NULL wherever allowed): key columns
    take the second variant in the sparse row, NOT NULL foreign keys the first (whose row exists)."""
    for variant in (1, 2):
        for table in SEED_TABLES:
            names, values = [], []
            for name, type_name, not_null, unique in _columns(conn, schema, table):
                if variant == 2 and not not_null:
                    continue
                names.append(sql.Identifier(name))
                values.append(sql.SQL(_literal(type_name, 2 if variant == 2 and unique else 1)))
            conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(schema, table), sql.SQL(", ").join(names), sql.SQL(", ").join(values)
            ))


def in_commit_order(events: list[tuple[bytes | None, bytes, dict[str, Any]]]) -> list[tuple[bytes | None, bytes, dict[str, Any]]]:
    return sorted(events, key=lambda e: (e[2]["source"]["commit_lsn"], e[2]["source"]["lsn"]))


def _state(events: list[tuple[bytes | None, bytes, dict[str, Any]]]) -> dict[bytes, dict[str, Any]]:
    """The rows the events leave, by record key (one key stays on one partition, in order)."""
    rows: dict[bytes, dict[str, Any]] = {}
    for key, _, event in events:
        assert key is not None
        if event["op"] == "d":
            rows.pop(key, None)
        else:
            rows[key] = event["after"]
    return rows


def _comparable(oid: int, value: Any, converter: ValueConverter) -> Any:
    # fields typed as strings (jsonb, interval, inet): parse them as psycopg parses a SELECT
    return converter.to_python(oid, value.encode()) if isinstance(value, str) else value


def _table_matches(conn: psycopg.Connection[Any], schema: str, table: str, topics: Topics) -> bool:
    cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table)))
    oids = [d.type_code for d in cur.description]  # type: ignore[union-attr]
    names = [d.name for d in cur.description]  # type: ignore[union-attr]
    selected = [dict(zip(names, r)) for r in cur.fetchall()]
    state = list(_state(topics.events[table]).values())
    if len(state) != len(selected):
        return False
    converter = ValueConverter()
    decoded = [{n: _comparable(o, row[n], converter) for n, o in zip(names, oids)} for row in state]
    key = lambda row: json.dumps(row, sort_keys=True, default=str)  # noqa: E731
    return sorted(decoded, key=key) == sorted(selected, key=key)


def test_every_column_type_of_the_seed_tables_round_trips_through_snapshot_stream_and_incremental_snapshot(
    cdc_settings: Settings, pg: psycopg.Connection[Any], schemas_table: None, topics_of: Any
) -> None:
    schema = f"seed_{uuid.uuid4().hex[:8]}"
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    for n in range(1, 11):  # the seed's own DDL: whatever types it uses are the ones tested
        [path] = (REPO_ROOT / "ddl").glob(f"{n:04d}_*.sql")
        pg.execute(path.read_text(encoding="utf-8"))
    pg.execute("SET search_path TO public")
    settings = typed(cdc_settings, cdc_schema=schema, cdc_tables=SEED_TABLES, cdc_incremental_chunk_size=1)
    types = {t for table in SEED_TABLES for _, t, _, _ in _columns(pg, schema, table)}
    assert {"numeric(10,2)", "text[]", "jsonb", "uuid", "inet", "interval", "timestamp with time zone",
            "bigint", "integer", "boolean", "text", "character varying(10)"} <= types, types
    _insert_rows(pg, schema)

    # 1. the full snapshot: every row as a typed read event
    done = run_snapshot(settings, tuple(SEED_TABLES))
    assert done.rows == {t: 2 for t in SEED_TABLES}
    topics = topics_of(settings, SEED_TABLES, make_decoder(settings, pg))

    def all_match() -> bool:
        topics.poll()
        return all(_table_matches(pg, schema, t, topics) for t in SEED_TABLES)

    wait_for(all_match, 60, "the snapshot's events to equal every table")
    assert all(e["op"] == "r" and e["source"]["snapshot"] for evs in topics.events.values() for _, _, e in evs)

    # 2. the stream: an update, a delete, an insert; then an incremental snapshot of one table
    with running_reader(settings):
        pg.execute(sql.SQL("UPDATE {} SET title = 'changed ✓', weight = 1.50, metadata = '{{\"k\": 1}}' "
                           "WHERE is_active").format(sql.Identifier(schema, "products")))
        pg.execute(sql.SQL("DELETE FROM {} WHERE feature_value IS NULL").format(sql.Identifier(schema, "product_features")))
        pg.execute(sql.SQL("INSERT INTO {} (id, asin, scraped_at, price, bullet_points) VALUES "
                           "(42, {}, '2024-03-01 00:00:00.000001+00', 0.01, '{{NULL}}')").format(
            sql.Identifier(schema, "product_snapshots"), sql.Literal(_varchar(10, 1))))
        wait_for(all_match, 60, "streamed changes to equal every table")
        before = len(topics.events["products"])
        signal = incremental.request(pg, schema, settings.cdc.slot_name, ["products"])
        wait_for(lambda: all(p.status == "done" for p in incremental.progress(pg, schema, settings.cdc.slot_name, signal)),
                 60, "the incremental snapshot")
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= before + 2, 30, "its read events")
        assert all_match()

    ops = [e["op"] for _, _, e in topics.events["products"]]
    assert ops[:2] == ["r", "r"] and "u" in ops and ops[-2:] == ["r", "r"]
    [delete] = [e for _, _, e in topics.events["product_features"] if e["op"] == "d"]
    assert delete["before"] == {"id": 9007199254740994}  # the Key record: PostgreSQL sent the old key only
    # one version per table, registered under the topic's subject; none for a partition (PostgreSQL
    # sends the Relation message of the partition a change went to as well as the root's)
    subjects = dict(pg.execute("SELECT subject, max(version) FROM cdc_schemas GROUP BY subject").fetchall())
    assert subjects == {f"{cdc_topic_name(settings, t, schema)}-value": 1 for t in SEED_TABLES}
    # typed values, not text: what a consumer of the generic envelope could not tell apart
    [(_, _, snap)] = [x for x in topics.events["product_snapshots"] if x[2]["after"] and x[2]["after"]["id"] == 42]
    assert snap["after"]["price"] == Decimal("0.01") and snap["after"]["bullet_points"] == [None]
    assert snap["after"]["scraped_at"] == datetime(2024, 3, 1, 0, 0, 0, 1, tzinfo=timezone.utc)


# --- evolution ----------------------------------------------------------------------------------
def _subject(settings: Settings, table: str) -> str:
    return f"{cdc_topic_name(settings, table, settings.cdc.schema_name)}-value"


def _versions(pg: psycopg.Connection[Any], subject: str) -> list[int]:
    return [r[0] for r in pg.execute("SELECT version FROM cdc_schemas WHERE subject = %s ORDER BY version", (subject,))]


def _insert_product(pg: psycopg.Connection[Any], schema: str, asin: str, **extra: Any) -> None:
    names = ["asin", "title", *extra]
    pg.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(schema, "products"), sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    ), [asin, f"title {asin}", *extra.values()])


def test_add_column_mid_stream_registers_a_compatible_version_used_from_the_next_change(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], schemas_table: None, topics_of: Any
) -> None:
    settings = typed(cdc_settings)
    decoder = make_decoder(settings, pg)
    with running_reader(settings):
        _insert_product(pg, cdc_schema, "A1", weight=Decimal("1.25"))
        topics = topics_of(settings, ["products"], decoder)
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 1, 30, "the first event")
        pg.execute(sql.SQL("ALTER TABLE {} ADD COLUMN launched date").format(sql.Identifier(cdc_schema, "products")))
        _insert_product(pg, cdc_schema, "A2", launched=datetime(2024, 5, 6).date())
        pg.execute(sql.SQL("UPDATE {} SET brand = 'b' WHERE asin = 'A1'").format(sql.Identifier(cdc_schema, "products")))
        # SET NOT NULL: the topic holds nulls of weight, so its field stays nullable: no new version
        pg.execute(sql.SQL("UPDATE {} SET weight = 0 WHERE weight IS NULL").format(sql.Identifier(cdc_schema, "products")))
        pg.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN weight SET NOT NULL").format(sql.Identifier(cdc_schema, "products")))
        _insert_product(pg, cdc_schema, "A3", weight=Decimal("2"))
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 5, 30, "the events after the ALTERs")
    subject = _subject(settings, "products")
    assert _versions(pg, subject) == [1, 2]
    events = in_commit_order(topics.events["products"])  # several keys: several partitions
    assert [decoder.version(raw).version for _, raw, _ in events] == [1, 2, 2, 2, 2]
    first, added, updated, _, last = (e for _, _, e in events)
    assert last["after"]["weight"] == Decimal("2.00")
    assert "launched" not in first["after"] and first["after"]["weight"] == Decimal("1.25")
    assert added["after"]["launched"] == datetime(2024, 5, 6).date()
    assert updated["after"]["launched"] is None and updated["after"]["brand"] == "b"
    v2 = decoder.version(events[1][1]).raw
    [field] = [f for f in v2["fields"][1]["type"][1]["fields"] if f["name"] == "launched"]
    assert field == {"name": "launched", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None,
                     "doc": "date"}


def _run_until_failure(settings: Settings, timeout: float = 60) -> BaseException | None:
    """Run a reader in this thread until it raises (or ``timeout``): what `cdc run` would do."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        CdcReader(settings, stop=stop).run()
    except BaseException as exc:  # the failure under test
        return exc
    finally:
        timer.cancel()
    return None


@pytest.mark.parametrize(("alter", "column"), [
    ("ALTER TABLE {} ALTER COLUMN weight TYPE text", "weight"),
    ("ALTER TABLE {} DROP COLUMN is_active", "is_active"),  # NOT NULL, no default in v1
])
def test_an_incompatible_change_stops_the_reader_with_one_line_unless_allowed(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], schemas_table: None, topics_of: Any,
    alter: str, column: str,
) -> None:
    settings = typed(cdc_settings)
    subject = _subject(settings, "products")
    with running_reader(settings):  # v1, made while the table still has the column as it was
        _insert_product(pg, cdc_schema, "B1", weight=Decimal("2.50"))
        topics = topics_of(settings, ["products"], make_decoder(settings, pg))
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 1, 30, "the first event")
    pg.execute(sql.SQL(alter).format(sql.Identifier(cdc_schema, "products")))
    _insert_product(pg, cdc_schema, "B2")

    # what the operator sees: `insights cdc run` ends with one line and exit code 4
    done = run_cli("cdc", "run", env=child_env(settings), timeout=120)
    assert_one_line_error(done, 4, f"column {column}", subject, "INSIGHTS_CDC_TYPED_ALLOW_INCOMPATIBLE",
                          after_progress=True)
    failure = _run_until_failure(settings)  # and in-process: the typed error, never retried as a lost stream
    assert isinstance(failure, IncompatibleSchemaChangeError) and not stream_lost(failure), failure
    assert _versions(pg, subject) == [1]  # nothing registered, and nothing published with it
    time.sleep(1.0)
    topics.poll()
    assert [e["after"]["asin"] for _, _, e in topics.events["products"]] == ["B1"]  # nothing of B2

    # the operator allows it: the same change is registered as v2 and published with it
    with running_reader(typed(cdc_settings, cdc_typed_allow_incompatible=True)):
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 2, 30, "the change after the ALTER")
    assert _versions(pg, subject) == [1, 2]
    last = in_commit_order(topics.events["products"])[-1][2]["after"]
    assert last["asin"] == "B2" and (column not in last if "DROP" in alter else last[column] is None)


def test_a_null_in_a_column_made_not_null_later_widens_the_schema(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], schemas_table: None, topics_of: Any
) -> None:
    """A backlog change written before SET NOT NULL, read after it: the catalog says NOT NULL, the
    change has a NULL. The column becomes nullable (a new version; BACKWARD lets it through)."""
    settings = typed(cdc_settings, cdc_typed_compatibility="BACKWARD")
    CdcReader(settings).setup()
    _insert_product(pg, cdc_schema, "C1")  # weight NULL
    pg.execute(sql.SQL("UPDATE {} SET weight = 1").format(sql.Identifier(cdc_schema, "products")))
    pg.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN weight SET NOT NULL").format(sql.Identifier(cdc_schema, "products")))
    decoder = make_decoder(settings, pg)
    with running_reader(settings):
        topics = topics_of(settings, ["products"], decoder)
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 2, 30, "both changes")
    [(_, raw1, insert), (_, raw2, update)] = topics.events["products"]
    assert insert["after"]["weight"] is None and update["after"]["weight"] == Decimal("1.00")
    assert decoder.version(raw1).version == decoder.version(raw2).version == 2  # v1 was NOT NULL, never used
    assert _versions(pg, _subject(settings, "products")) == [1, 2]


# --- a registry instead of cdc_schemas --------------------------------------------------------------
def test_with_a_registry_versions_live_there_and_events_are_confluent_framed(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], topics_of: Any
) -> None:
    url = f"mock://typed-{uuid.uuid4().hex[:8]}"
    settings = typed(cdc_settings, schema_registry_url=url)
    decoder = make_decoder(settings)
    with running_reader(settings):
        _insert_product(pg, cdc_schema, "D1", weight=Decimal("3.75"))
        topics = topics_of(settings, ["products"], decoder)
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 1, 30, "the event")
        pg.execute(sql.SQL("ALTER TABLE {} ADD COLUMN note text").format(sql.Identifier(cdc_schema, "products")))
        _insert_product(pg, cdc_schema, "D2", note="n")
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 2, 30, "the event after the ALTER")
    (_, raw1, e1), (_, raw2, e2) = in_commit_order(topics.events["products"])
    assert raw1[0] == 0 and raw2[0] == 0  # Confluent framing: magic 0, schema id
    assert e1["after"]["weight"] == Decimal("3.75") and e2["after"]["note"] == "n"
    client = registry_client(url)
    subject = _subject(settings, "products")
    assert sorted(client.get_versions(subject)) == [1, 2]
    assert client.get_version(subject, 2).schema_id == int.from_bytes(raw2[1:5], "big")
    # no row went to cdc_schemas (the CDC test databases do not even have it)
    assert pg.execute("SELECT to_regclass('cdc_schemas')").fetchone() == (None,)


def test_the_generic_envelope_is_untouched_by_default(cdc_settings: Settings) -> None:
    assert cdc_settings.cdc.format == "generic"
    reader = CdcReader(cdc_settings)
    assert reader.typed is None and reader._header is not None  # the fast path stays on


# --- a registry that goes away ------------------------------------------------------------------------
@pytest.fixture
def http_registry() -> Iterator[HttpRegistry]:
    registry = HttpRegistry()
    yield registry
    registry.stop()


def test_a_registry_outage_is_waited_out_without_losing_or_reordering_a_change(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], topics_of: Any,
    http_registry: HttpRegistry, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = typed(cdc_settings, schema_registry_url=http_registry.url, cdc_reconnect_max_s=1.0)
    caplog.set_level(logging.INFO, logger="streams.cdc")
    with running_reader(settings) as reader:
        _insert_product(pg, cdc_schema, "R1")
        topics = topics_of(settings, ["products"], make_decoder(settings))
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 1, 30, "the first event")
        http_registry.stop()
        _insert_product(pg, cdc_schema, "R2")  # v1 is known: needs no registry
        # a new column: the next change needs v2, which only the registry can give
        pg.execute(sql.SQL("ALTER TABLE {} ADD COLUMN note text").format(sql.Identifier(cdc_schema, "products")))
        for asin in ("R3", "R4", "R5"):
            _insert_product(pg, cdc_schema, asin, note=asin)
        wait_for(lambda: reader.registry_outage.ongoing, 30, "the reader to meet the outage")
        time.sleep(3.0)  # several backoff rounds
        topics.poll()
        assert [e["after"]["asin"] for _, _, e in in_commit_order(topics.events["products"])] == ["R1", "R2"]
        assert reader.health.is_failing("schema_registry")
        http_registry.start()
        wait_for(lambda: topics.poll() or len(topics.events["products"]) >= 5, 60, "the changes after the outage")
        time.sleep(1.0)
        topics.poll()
        assert not reader.registry_outage.ongoing and not reader.health.is_failing("schema_registry")
    events = topics.events["products"]
    # once each, in commit order (one key per product: compare by commit position)
    assert [e["after"]["asin"] for _, _, e in in_commit_order(events)] == ["R1", "R2", "R3", "R4", "R5"]
    assert len(events) == 5
    assert [e["after"].get("note") for _, _, e in in_commit_order(events)][2:] == ["R3", "R4", "R5"]
    assert len(http_registry.subjects[_subject(settings, "products")]) == 2
    # the operator's contract: one line when it starts, one when it ends; no reconnection of the stream
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "registry" in r.getMessage()]
    assert len([m for m in lines if m.startswith("schema registry unavailable")]) == 1, lines
    assert len([m for m in lines if m.startswith("schema registry answers again")]) == 1, lines
    assert not [r for r in caplog.records if "lost the replication stream" in r.getMessage()]
    assert reader.metrics.registry_outages._value.get() == 1


def test_a_registry_that_refuses_the_credentials_ends_the_reader_with_one_line(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], http_registry: HttpRegistry,
) -> None:
    settings = typed(cdc_settings, schema_registry_url=http_registry.url)
    CdcReader(settings).setup()
    _insert_product(pg, cdc_schema, "A1")
    http_registry.answer = 401
    started = time.monotonic()
    failure = _run_until_failure(settings)
    assert isinstance(failure, RegistryRefusedError) and not stream_lost(failure), failure
    assert failure.exit_code == 1 and time.monotonic() - started < 30  # not retried for ever
    requests = http_registry.requests
    done = run_cli("cdc", "run", env=child_env(settings), timeout=120)
    assert_one_line_error(done, 1, "HTTP 401", "INSIGHTS_SCHEMA_REGISTRY_URL", after_progress=True)
    assert http_registry.requests > requests
