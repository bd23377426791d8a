"""The sink contract: what every sink must guarantee, asserted once for all of them.

In the style of eventsourcing's recorder test cases: :class:`SinkContract` holds the tests,
and each sink has a subclass (``tests/consumers/<sink>/test_contract.py``) that says how to
make valid and poison records for it and which tables hold its state. Everything runs
through the real loop (``consumers.registry.build_loop``) against real Kafka and
PostgreSQL; the only fault injected is a trigger on ``consumer_offsets``, which makes
PostgreSQL itself fail a batch after the sink wrote its rows.

The contract:

* **redelivery changes nothing**: the same records again (later on the topic, or read
  again by a new group) leave every row as it was, server-clock columns included;
* **reordering leaves the newest state**: shuffled within one batch or across small
  batches, the records end in the state of an in-order run;
* **poison isolation**: a bad record goes to its topic's DLQ with its class, its reason
  and its coordinates; its neighbours in the same batch are stored;
* **offset atomicity**: rows and ``consumer_offsets`` commit together; a batch that fails
  after the rows were written leaves neither, and a transient failure is retried until
  everything is stored exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from consumers.registry import get as sink_spec
from core.settings import Settings, load_settings
from streams.consumer import ConsumerLoop
from streams.dlq import H_ERROR_CLASS, H_GROUP, H_OFFSET, H_PARTITION, H_REASON, H_TOPIC, headers_dict
from streams.topics import dlq_name
from tests.consumers.conftest import run_until_idle
from tests.consumers.events import shuffled

#: per table, its rows as column -> value
State = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Record:
    """One Kafka record as produced: the sink's subclass serializes it."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Poison:
    record: Record
    #: the ``insights.error.class`` header it must get
    error_class: str
    #: a fragment the ``insights.error.reason`` header must contain
    reason: str


# A failure PostgreSQL raises after the sink wrote the batch's rows, when the offsets are
# stored: P0001 (raise_exception) is neither transient nor a data error, so the loop stops.
FAIL_OFFSETS = """
CREATE FUNCTION contract_refuse_offsets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'contract: offsets refused' USING ERRCODE = 'P0001'; END $$;
CREATE TRIGGER contract_refuse_offsets BEFORE INSERT ON consumer_offsets
    FOR EACH STATEMENT EXECUTE FUNCTION contract_refuse_offsets();
"""
STOP_FAILING = "DROP TRIGGER contract_refuse_offsets ON consumer_offsets"

# The same place, but a serialization failure (40001, transient) for the first two
# attempts only: a sequence is not rolled back with the failed transaction, so it counts.
FAIL_OFFSETS_TWICE = """
CREATE SEQUENCE contract_attempts;
CREATE FUNCTION contract_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('contract_attempts') <= 2 THEN
        RAISE EXCEPTION 'contract: serialization conflict' USING ERRCODE = '40001';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER contract_conflict BEFORE INSERT ON consumer_offsets
    FOR EACH STATEMENT EXECUTE FUNCTION contract_conflict();
"""


class SinkContract:
    """Subclass as ``Test<Sink>Contract`` and fill in the class attributes and hooks below."""

    #: the sink's registered name (``consumers.registry``)
    sink: ClassVar[str]
    #: the tables holding the sink's state ("table" or "schema.table")
    tables: ClassVar[tuple[str, ...]]
    #: per table, the columns two runs may fill differently although the state is the same
    #: (server clock, identity values): left out when two databases are compared
    volatile: ClassVar[Mapping[str, frozenset[str]]] = {}
    partitions: ClassVar[int] = 3

    # --- what a sink's subclass supplies -------------------------------------------------
    def records(self, settings: Settings) -> list[Record]:
        """Valid records in the order their changes happened, several versions per entity."""
        raise NotImplementedError

    def poison(self, settings: Settings) -> list[Poison]:
        """Records that can never be stored, each with the class and reason it must get."""
        raise NotImplementedError

    def seed(self, conn: psycopg.Connection) -> None:
        """Rows the records refer to, written before any consumer runs."""

    # --- fixtures ----------------------------------------------------------------------
    @pytest.fixture
    def topics(self, settings: Settings) -> Iterator[list[str]]:
        with self._topics(settings) as names:
            yield names

    @pytest.fixture
    def db(self, pg: psycopg.Connection) -> psycopg.Connection:
        self.seed(pg)
        return pg

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, pg_admin_dsn: str, pg_template: str, kafka_bootstrap: str) -> State:
        """The state of the valid records consumed in order, in a database of its own
        (once per sink: the tests compare against it)."""
        self = cls()
        with _scratch_database(pg_admin_dsn, pg_template) as dsn:
            settings = _settings(dsn, kafka_bootstrap)
            with self._topics(settings), psycopg.connect(dsn, autocommit=True) as conn:
                self.seed(conn)
                records = self.records(settings)
                produce(settings, records)
                loop = self.run(settings)
                assert loop.totals.consumed == len(records) and loop.totals.dead_letters == 0
                state = self.state(conn)
        assert all(state.values()), f"the reference run stored nothing in some table: {state}"
        return state

    # --- the contract ------------------------------------------------------------------
    def test_redelivery_changes_nothing(
        self, settings: Settings, topics: list[str], db: psycopg.Connection, reference: State
    ) -> None:
        records = self.records(settings)
        produce(settings, records)
        self.run(settings.replace(batch_size=7))
        assert self.state(db) == reference
        stored = self.exact(db)
        assert sum(offsets(db, settings.consumer.group).values()) == len(records)

        # the same records again, later on the topics (a producer retried, a reader re-sent)
        produce(settings, records)
        again = self.run(settings.replace(batch_size=7))
        assert again.totals.consumed == len(records) and again.totals.dead_letters == 0
        assert self.exact(db) == stored

        # everything once more, read by a new group from the beginning
        replay = self.run(settings.replace(consumer_group=settings.consumer.group + "-replay"))
        assert replay.totals.consumed == 2 * len(records)
        assert self.exact(db) == stored

    @pytest.mark.parametrize(
        ("batch_size", "batch_wait_ms"), [(100_000, 3000), (7, 200)], ids=["within-a-batch", "across-batches"]
    )
    def test_reordering_leaves_the_newest_state(
        self, settings: Settings, topics: list[str], db: psycopg.Connection, reference: State,
        batch_size: int, batch_wait_ms: int,
    ) -> None:
        records = self.records(settings)
        produce(settings, shuffled(records, seed=11))
        loop = self.run(settings.replace(batch_size=batch_size, batch_wait_ms=batch_wait_ms))
        assert loop.totals.consumed == len(records)
        assert self.state(db) == reference
        assert sum(offsets(db, settings.consumer.group).values()) == len(records)

    def test_poison_goes_to_the_dlq_with_its_reason_and_its_neighbours_are_stored(
        self, settings: Settings, topics: list[str], db: psycopg.Connection, reference: State
    ) -> None:
        records, poison = self.records(settings), self.poison(settings)
        assert poison, "a sink's contract needs at least one poison record"
        stream, positions = interleave(records, [p.record for p in poison])
        where = produce(settings, stream)  # one batch: the poison has neighbours
        loop = self.run(settings)

        assert self.state(db) == reference
        assert loop.totals.dead_letters == len(poison)
        assert sum(offsets(db, settings.consumer.group).values()) == len(stream)
        letters = {
            (h[H_TOPIC], int(h[H_PARTITION]), int(h[H_OFFSET])): h
            for topic in topics for h in read_all(settings, dlq_name(topic))
        }
        expected = {(p.record.topic, *where[i]): p for p, i in zip(poison, positions, strict=True)}
        assert sorted(letters) == sorted(expected), "dead letters do not point at the poison records"
        for at, bad in expected.items():
            headers = letters[at]
            assert headers[H_ERROR_CLASS] == bad.error_class, headers
            assert bad.reason in headers[H_REASON], headers
            assert headers[H_GROUP] == settings.consumer.group

    def test_rows_and_offsets_commit_together(
        self, settings: Settings, topics: list[str], db: psycopg.Connection, reference: State
    ) -> None:
        before = self.exact(db)
        records = self.records(settings)
        produce(settings, records)
        db.execute(FAIL_OFFSETS)
        with pytest.raises(psycopg.errors.RaiseException, match="offsets refused"):
            self.run(settings)
        assert self.exact(db) == before, "rows of a batch whose offsets failed were committed"
        assert offsets(db, settings.consumer.group) == {}

        db.execute(STOP_FAILING)
        self.run(settings)
        assert self.state(db) == reference
        assert sum(offsets(db, settings.consumer.group).values()) == len(records)

    def test_a_transient_failure_mid_batch_is_retried_until_stored_once(
        self, settings: Settings, topics: list[str], db: psycopg.Connection, reference: State
    ) -> None:
        records = self.records(settings)
        produce(settings, records)
        db.execute(FAIL_OFFSETS_TWICE)
        loop = self.run(settings)
        assert self.state(db) == reference
        assert sum(offsets(db, settings.consumer.group).values()) == len(records)
        assert loop.metrics.retries.labels("postgres")._value.get() >= 2  # type: ignore[attr-defined]
        assert not loop.health.is_failing("postgres")

    # --- helpers -----------------------------------------------------------------------
    def run(self, settings: Settings, **options: Any) -> ConsumerLoop:
        # idle: long enough for an empty poll or two while the group forms
        idle = 3.0 + 2 * settings.consumer.batch_wait_ms / 1000
        return run_until_idle(settings, self.sink, idle=idle, **options)

    def exact(self, conn: psycopg.Connection) -> State:
        """Every column of every row of the sink's tables."""
        return dump(conn, self.tables, {})

    def state(self, conn: psycopg.Connection) -> State:
        """The sink's state as two databases can compare it (volatile columns left out)."""
        return dump(conn, self.tables, self.volatile)

    @contextmanager
    def _topics(self, settings: Settings) -> Iterator[list[str]]:
        """The sink's source topics under the settings' prefix, with DLQs unless the
        consumer creates its own; every topic under the prefix is deleted afterwards."""
        spec = sink_spec(self.sink)
        names = spec.topics(settings)
        admin = AdminClient(settings.kafka.client_config())
        wanted = [NewTopic(n, num_partitions=self.partitions, replication_factor=1) for n in names]
        if spec.own_dlq_topics is None:
            wanted += [NewTopic(dlq_name(n), num_partitions=1, replication_factor=1) for n in names]
        for future in admin.create_topics(wanted).values():
            future.result(timeout=30)
        try:
            yield names
        finally:
            prefix = settings.kafka.topic_prefix + "."
            mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
            for future in (admin.delete_topics(mine).values() if mine else ()):
                try:
                    future.result(timeout=30)
                except Exception:  # noqa: BLE001 - cleanup is best effort
                    pass


def interleave(records: list[Record], poison: list[Record]) -> tuple[list[Record], list[int]]:
    """``records`` with ``poison`` spread evenly through them; and where each poison landed."""
    stream, positions = list(records), []
    step = max(len(records) // (len(poison) + 1), 1)
    for i, bad in enumerate(poison):
        at = min((i + 1) * step + i, len(stream))
        stream.insert(at, bad)
        positions.append(at)
    return stream, positions


def produce(settings: Settings, records: list[Record]) -> list[tuple[int, int]]:
    """Produce ``records`` in order; return where each landed (partition, offset)."""
    producer = Producer(settings.kafka.client_config(**{"enable.idempotence": True, "linger.ms": 20}))
    where: list[tuple[int, int] | None] = [None] * len(records)

    def delivered(index: int):  # type: ignore[no-untyped-def]
        def callback(err, msg) -> None:  # type: ignore[no-untyped-def]
            assert err is None, err
            where[index] = (msg.partition(), msg.offset())

        return callback

    for i, record in enumerate(records):
        producer.produce(record.topic, key=record.key, value=record.value, on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(30) == 0, "not every contract record was delivered"
    assert all(w is not None for w in where)
    return where  # type: ignore[return-value]


def read_all(settings: Settings, topic: str) -> list[dict[str, str]]:
    """The headers of every record on ``topic`` (up to its high watermarks, read now)."""
    consumer = Consumer(settings.kafka.client_config(
        **{"group.id": f"contract-{uuid.uuid4().hex}", "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found: list[dict[str, str]] = []
        seen = dict.fromkeys(partitions, 0)
        for _ in range(60):
            if all(seen[p] >= end for p, end in ends.items()):
                break
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    found.append(headers_dict(msg.headers()))
                    seen[msg.partition()] = msg.offset() + 1
        return found
    finally:
        consumer.close()


def offsets(conn: psycopg.Connection, group: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", (group,)
    ).fetchall()
    return {(t, p): o for t, p, o in rows}


def dump(conn: psycopg.Connection, tables: tuple[str, ...], leave_out: Mapping[str, frozenset[str]]) -> State:
    out: State = {}
    for table in tables:
        schema, _, name = table.rpartition(".")
        schema = schema or "public"
        columns = [
            c for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position", (schema, name),
            ).fetchall()
            if c not in leave_out.get(table, frozenset())
        ]
        assert columns, f"no table {table}"
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, name)
        )
        with conn.cursor(row_factory=dict_row) as cur:
            out[table] = sorted(cur.execute(query).fetchall(), key=repr)
    return out


@contextmanager
def _scratch_database(admin_dsn: str, template: str) -> Iterator[str]:
    name = f"contract_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _settings(dsn: str, kafka_bootstrap: str) -> Settings:
    parts = conninfo_to_dict(dsn)
    password = parts.pop("password", None)
    return load_settings(
        pg_dsn=make_conninfo(**parts),
        pg_password=password,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        consumer_group=f"g{uuid.uuid4().hex[:12]}",
        metrics_port=0,
    )
