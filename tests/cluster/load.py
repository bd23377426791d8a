"""Steady ingest through the cluster, as production runs it, and the exactly-once checks after.

:class:`Ingest` runs what production runs, as real processes: ``insights consume scrape``
(several, one group), optionally ``insights cdc run`` and ``insights consume summaries``,
fed by a producer thread with the project's ``events`` profile (``acks=all``,
idempotent). A few poison records are mixed in, so the dead-letter path is exercised
through the failure as well. A test starts it, does something to the brokers, and
calls :meth:`Ingest.finish`: every event stored once, nothing lost, exactly the poison
in the DLQ, the summaries equal to the refreshed view, and every process still the one
started (none restarted by hand) and exiting 0 on SIGTERM.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from streams.admin import ensure_topics
from streams.dlq import H_OFFSET, H_PARTITION
from streams.kafka.clients import producer_config
from streams.serde import RecordContext, make_serializer
from streams.topics import cdc_topic_name, dlq_name, event_topics
from tests.consumers.conftest import count, dlq_entries
from tests.consumers.events import asin, scrape
from tests.consumers.procs import INSIGHTS, consumer_env, start_consumer, terminate
from tests.fix_services import child_env
from tests.summaries.conftest import assert_matches_source

SUMMARY_TABLES = ["products", "product_snapshots", "alerts"]

#: the test's own probes (leaders, groups, watermarks) see brokers down on purpose: no log noise
QUIET = logging.getLogger("tests.cluster.probe")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


#: what a probe sees while a leader moves; asked again
MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
}


def probe_config(settings: Settings, **extra: object) -> dict[str, object]:
    return settings.kafka.client_config(logger=QUIET, **extra)


@dataclass
class Ingest:
    settings: Settings
    pg_dsn: str
    logs: Path
    products: int = 120
    #: events per second the producer offers: a steady stream, from start() until
    #: stop_producing(), so that the failure lands in it however long the failure takes
    rate: float = 150.0
    #: a safety stop: the stream ends by itself after this many events
    max_events: int = 200_000
    partitions: int = 6
    consumers: int = 3
    cdc: bool = False
    #: one poison record (not Avro) after every this many events
    poison_every: int = 400
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    delivered: int = 0
    poison: int = 0
    failures: list[str] = field(default_factory=list)
    producer_done: threading.Event = field(default_factory=threading.Event)
    stop_producing: threading.Event = field(default_factory=threading.Event)
    #: events produced (poison excluded), and the last scrape number of each product
    produced: int = 0
    last_scrape: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.settings = self.settings.replace(
            cdc_slot_name=f"cluster_{tag}",
            cdc_publication=f"cluster_{tag}",
            cdc_schema="public",
            cdc_tables=SUMMARY_TABLES,
            cdc_heartbeat_interval_s=0.5,
            cdc_status_interval_s=0.2,
            cdc_standby_retry_s=0.5,
        )
        specs = event_topics(self.settings, partitions=self.partitions)
        # the cluster's replication (3, min.insync 2) is applied by ensure_topics itself
        ensure_topics(self.settings, specs)
        self.topic = next(s.name for s in specs if s.value_subject == "product_scraped")
        self.group = self.settings.consumer.group
        self.env = consumer_env(self.settings, self.pg_dsn, INSIGHTS_BATCH_SIZE="200", INSIGHTS_BATCH_WAIT_MS="50")
        self._thread: threading.Thread | None = None

    @property
    def total(self) -> int:
        """Events produced so far (all of them once the producer is done)."""
        return self.produced

    # --- processes -----------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([INSIGHTS, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_consumer(self, name: str) -> None:
        self.procs[name] = start_consumer("scrape", self.env, self.group, self.logs / f"{name}.log")

    def start(self) -> Ingest:
        if self.cdc:
            # the slot first: rows the consumers write before it exists would never reach the summaries
            self._spawn("cdc", ["cdc", "run"])
            wait(lambda: self._cdc_ready(), 120, "the CDC reader's slot and topics")
            self._spawn("summaries", ["consume", "summaries", "--group", f"{self.group}.summaries"])
        for i in range(self.consumers):
            self.start_consumer(f"scrape-{i}")
        # the stream starts once the consumers can take it, so that it is still flowing
        # when the test breaks something (process start-up takes seconds on a busy machine)
        wait(lambda: self._consumers_ready(), 120, "the consumers to join their group")
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()
        return self

    def _consumers_ready(self) -> bool:
        self.assert_running()
        admin = AdminClient(probe_config(self.settings))
        try:
            desc = admin.describe_consumer_groups([self.group])[self.group].result(timeout=10)
        except Exception:  # the group does not exist yet
            return False
        return len(desc.members) >= self.consumers

    def _cdc_ready(self) -> bool:
        self.assert_running()
        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            slot = conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.settings.cdc.slot_name,)
            ).fetchone()
        if slot is None:
            return False
        consumer = Consumer(probe_config(self.settings, **{"group.id": "probe"}))
        try:
            topics = consumer.list_topics(timeout=10).topics
        finally:
            consumer.close()
        return all(cdc_topic_name(self.settings, t) in topics for t in SUMMARY_TABLES)

    def assert_running(self) -> None:
        """No process died: a failure of the brokers must not need anyone to restart one."""
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"exited during the test: {dead}; " + "; ".join(
            f"{name}: {tail(self.logs / f'{name}.log')}" for name in dead
        )

    # --- producing -------------------------------------------------------------------------
    def _produce(self) -> None:
        serialize = make_serializer(self.settings, "product_scraped")
        delivered: list[int] = [0]

        def on_delivery(err, _msg) -> None:  # type: ignore[no-untyped-def]
            if err is not None:
                self.failures.append(str(err))
            else:
                delivered[0] += 1

        producer = Producer(producer_config(self.settings.kafka, "events", on_delivery=on_delivery))
        per_tick = max(1, int(self.rate * 0.05))
        started = time.monotonic()
        try:
            i = 0
            while not self.stop_producing.is_set() and i < self.max_events:
                n, s = i % self.products, i // self.products
                value = serialize(scrape(n, s, features=1), RecordContext(self.topic))
                send(producer, self.topic, asin(n).encode(), value)
                self.last_scrape[n] = s
                i += 1
                self.produced = i
                if i % self.poison_every == 0:
                    # numbered: every record of the run differs, so a copy in the log is recognisable
                    send(producer, self.topic, asin(n).encode(), b"\x00poison, not avro #%d" % i)
                    self.poison += 1
                if i % per_tick == 0:
                    producer.poll(0)
                    ahead = started + (i / self.rate) - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            remaining = producer.flush(180)
            if remaining:
                self.failures.append(f"{remaining} records not delivered after 180 s")
        finally:
            self.delivered = delivered[0]
            self.producer_done.set()

    def stored(self) -> int:
        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            return count(conn, "SELECT count(*) FROM product_snapshots")

    def wait_stored(self, at_least: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.stored()
            if seen >= at_least:
                return seen
            self.assert_running()
            assert time.monotonic() < deadline, f"{seen} of {at_least} events stored after {timeout:.0f}s"
            time.sleep(0.2)

    # --- the end ---------------------------------------------------------------------------
    def finish(self, timeout: float = 240) -> None:
        """End the stream, wait for everything to arrive, check exactly-once, stop every process cleanly."""
        self.stop_producing.set()
        try:
            assert self.producer_done.wait(timeout), "the producer did not finish"
            assert not self.failures, f"deliveries failed: {self.failures[:3]}"
            assert self.delivered == self.total + self.poison
            self.wait_stored(self.total, timeout)
            self.wait_group_caught_up(self.group, [self.topic], timeout)
            if self.cdc:
                self.wait_cdc_published(timeout)
                self.wait_group_caught_up(
                    f"{self.group}.summaries", [cdc_topic_name(self.settings, t) for t in SUMMARY_TABLES], timeout
                )
            self.assert_running()
            self.check()
        finally:
            codes = {name: terminate(p, 60) for name, p in self.procs.items()}
        assert codes == dict.fromkeys(self.procs, 0), codes

    def check(self) -> None:
        with psycopg.connect(self.pg_dsn, autocommit=True) as pg:
            assert count(pg, "SELECT count(*) FROM product_snapshots") == self.total, "lost or duplicated events"
            assert count(pg, "SELECT count(DISTINCT event_id) FROM product_snapshots") == self.total
            # every product shows its newest scrape: no older event overwrote a newer one
            latest = dict(pg.execute("SELECT asin, last_scraped_at FROM products").fetchall())
            assert latest == {asin(n): scrape(n, s).scraped_at for n, s in self.last_scrape.items()}
            stored = dict(pg.execute(
                "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = %s AND topic = %s",
                (self.group, self.topic),
            ).fetchall())
            if self.cdc:
                assert_matches_source(pg)
        # The log itself: every record produced is there, and anything more is a byte-identical
        # copy of one of them. The idempotent producer should leave none, yet one full run had a
        # copy after a rolling restart (the producer's delivery reports counted each record once,
        # the consumer counted the copy "already stored" and the table held every event once):
        # the exactly-once effect is the consumers' to keep, so a copy is tolerated, counted and
        # must be consumed like any record; a lost or foreign record still fails.
        log = read_log(self.settings, self.topic)
        distinct = collections.Counter(log)
        if len(log) > len(distinct):
            print(f"\n{len(log) - len(distinct)} copies of produced records in {self.topic} (a producer retry)")
        assert len(distinct) == self.total + self.poison, "the log does not hold exactly the records produced"
        assert sum(stored.values()) == len(log), "stored offsets do not cover every record of the log"
        poison_in_log = sum(1 for _p, _k, value in log if value.startswith(b"\x00poison"))
        letters = dlq_entries(self.settings, self.topic, poison_in_log)
        assert len(letters) == poison_in_log, f"DLQ holds {len(letters)} records, {poison_in_log} were poison"
        # each poison record once: a dead letter sent twice would repeat its original offset
        assert len({(h[H_PARTITION], h[H_OFFSET]) for h in letters}) == poison_in_log

    def wait_group_caught_up(self, group: str, topics: list[str], timeout: float) -> None:
        """Until the group's offsets in PostgreSQL reach the end of its topics."""
        ends = end_offsets(self.settings, topics)
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(self.pg_dsn, autocommit=True) as pg:
                stored = {
                    (t, p): o
                    for t, p, o in pg.execute(
                        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", (group,)
                    ).fetchall()
                }
            behind = {k: (stored.get(k, 0), v) for k, v in ends.items() if v > 0 and stored.get(k, 0) < v}
            if not behind:
                return
            self.assert_running()
            assert time.monotonic() < deadline, f"group {group} behind after {timeout:.0f}s: {behind}"
            time.sleep(0.3)

    def wait_cdc_published(self, timeout: float) -> None:
        """Until the slot has confirmed every change committed so far (acknowledged by Kafka)."""
        with psycopg.connect(self.pg_dsn, autocommit=True) as pg:
            target = pg.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            deadline = time.monotonic() + timeout
            while True:
                row = pg.execute(
                    "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    (target, self.settings.cdc.slot_name),
                ).fetchone()
                if row and row[0]:
                    return
                self.assert_running()
                assert time.monotonic() < deadline, "the CDC reader did not publish every change"
                time.sleep(0.3)

    def stop_all(self) -> None:
        """Whatever happened: no process left behind, and the test's topics deleted (fewer
        partitions make the next test's restarts and catch-ups shorter)."""
        self.stop_producing.set()
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.producer_done.wait(60)
        admin = AdminClient(probe_config(self.settings))
        prefix = self.settings.kafka.topic_prefix + "."
        mine = [t for t in admin.list_topics(timeout=20).topics if t.startswith(prefix)]
        for future in admin.delete_topics(mine).values() if mine else ():
            try:
                future.result(timeout=30)
            except Exception:  # deleting is tidiness, not the test
                pass


def read_log(settings: Settings, topic: str, timeout: float = 120) -> list[tuple[int, bytes, bytes]]:
    """Every record of ``topic`` up to its current end, as (partition, key, value)."""
    ends = end_offsets(settings, [topic], timeout)
    consumer = Consumer(probe_config(settings, **{"group.id": f"log-{uuid.uuid4().hex}", "enable.auto.commit": False}))
    out: list[tuple[int, bytes, bytes]] = []
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
        left = {p: end for (_t, p), end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while left:
            assert time.monotonic() < deadline, f"{topic}: partitions not read to their end: {left}"
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is not None:
                    continue
                partition = msg.partition()
                if partition in left and msg.offset() < left[partition]:
                    out.append((partition, msg.key() or b"", msg.value() or b""))
                    if msg.offset() + 1 >= left[partition]:
                        del left[partition]
    finally:
        consumer.close()
    return out


def send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:  # the local queue is full while a leader moves: wait for room
            producer.poll(0.2)


def end_offsets(settings: Settings, topics: list[str], timeout: float = 120) -> dict[tuple[str, int], int]:
    """High watermarks; retried while leaders move (a restarted broker takes its partitions back)."""
    consumer = Consumer(probe_config(settings, **{"group.id": f"probe-{uuid.uuid4().hex}"}))
    deadline = time.monotonic() + timeout
    try:
        out: dict[tuple[str, int], int] = {}
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=20).topics[topic].partitions:
                while True:
                    try:
                        tp = TopicPartition(topic, partition)
                        out[(topic, partition)] = consumer.get_watermark_offsets(tp, timeout=20)[1]
                        break
                    except KafkaException as exc:
                        # NOT_LEADER_FOR_PARTITION and friends: stale metadata, asked again
                        error = exc.args[0]
                        if not (error.retriable() or error.code() in MOVING) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
        return out
    finally:
        consumer.close()


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.3)


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def leaders(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> leading broker id."""
    consumer = Consumer(probe_config(settings, **{"group.id": "probe"}))
    try:
        meta = consumer.list_topics(topic, timeout=20).topics[topic]
        return {p.id: p.leader for p in meta.partitions.values()}
    finally:
        consumer.close()
