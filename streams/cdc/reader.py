"""The CDC loop: replication stream -> pgoutput -> change events -> idempotent producer.

Single-threaded. The socket read blocks (select) for up to half a second when nothing
is in flight, and for a few milliseconds while Kafka acknowledgements are pending, so
delivery callbacks (served by ``producer.poll``) move the confirmed position promptly.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Producer

from core.settings import Settings
from streams.cdc import metrics, slot as slots
from streams.cdc.codec import Encoder, make_encoder
from streams.cdc.envelope import ChangeEvent, SourceInfo, change_events, truncate_event
from streams.cdc.errors import CdcError, SlotInUseError, SlotLostError
from streams.cdc.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Relation,
    RelationCache,
    Truncate,
    TypeMessage,
    Update,
    decode,
)
from streams.cdc.positions import AckTracker
from streams.cdc.rowcodec import RelationCodec, change_bodies, source_txn
from streams.cdc.protocol import Keepalive, parse_copy_message, pg_us_to_unix
from streams.cdc.transport import SESSION_OPTIONS, ReplicationConnection, ReplicationError
from streams.cdc.values import ValueConverter
from streams.admin import ensure_topics
from streams.topics import cdc_tables, cdc_topic_name, cdc_topics

log = logging.getLogger(__name__)

_XLOG_LSNS = struct.Struct("!QQ").unpack_from
_OID = struct.Struct("!I").unpack_from
#: in a CopyData frame: 'w', wal_start, wal_end, send time (1 + 3 * 8 bytes), then pgoutput
_PAYLOAD = 25

IDLE_WAIT_S = 0.5
IN_FLIGHT_WAIT_S = 0.001


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return settings.kafka.client_config(
        **{
            "enable.idempotence": True,  # no duplicates or reordering from producer retries
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            "batch.num.messages": 10_000,
            **overrides,
        }
    )


class _Acks:
    """What one delivery callback stands for: a transaction, a (table, op) counter, a commit time.

    One instance (and one callback) per transaction, table and op: the callback only
    appends it to the reader's list of acks; the tracker, counters and the latency
    histogram are updated once per batch of delivery reports (``CdcReader._settle``).
    """

    __slots__ = ("seq", "counter", "commit_unix_s")

    def __init__(self, seq: int, counter: Any, commit_unix_s: float) -> None:
        self.seq = seq
        self.counter = counter
        self.commit_unix_s = commit_unix_s


def observe_many(histogram: Any, seconds: float, count: int) -> None:
    """``histogram.observe(seconds)`` ``count`` times, in one step where prometheus_client allows."""
    buckets = getattr(histogram, "_buckets", None)
    upper = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if count == 1 or buckets is None or upper is None or total is None:
        for _ in range(count):
            histogram.observe(seconds)
        return
    total.inc(seconds * count)
    for i, bound in enumerate(upper):
        if seconds <= bound:
            buckets[i].inc(count)
            break


class CdcReader:
    def __init__(
        self,
        settings: Settings,
        *,
        producer: Producer | None = None,
        encoder: Encoder | None = None,
        on_confirm: Callable[[int], None] | None = None,
        on_latency: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.slot = settings.cdc.slot_name
        self.tables = cdc_tables(settings)
        self.producer = producer or Producer(producer_config(settings))
        self.encode = encoder or make_encoder(settings)
        # the framing of the fast encoder: envelopes are then written straight from tuple text
        self._header: bytes | None = getattr(self.encode, "avro_header", None)
        self._codecs: dict[int, RelationCodec] = {}
        self._txn_source: bytes | None = None
        self._commit_unix_s = 0.0
        #: per relation OID, the topic and delivery callback of Inserts in the current transaction
        self._insert_targets: dict[int, tuple[str, Callable[[Any, Any], None]]] = {}
        self.on_confirm = on_confirm
        self.on_latency = on_latency  # raw commit-to-ack samples, for the benchmark
        self.cache = RelationCache()
        self.converter = ValueConverter()
        self.tracker = AckTracker()
        self.schema_changes = 0
        self._topics: dict[int, str] = {}
        self._known_topics: set[str] = set()
        self._partitions: dict[str, int] = {}
        self._failure: KafkaError | None = None
        self._received = 0
        self._last_sent_flush = -1
        self._begin: Begin | None = None
        self._txn_seq = -1
        self._m_changes: dict[tuple[str, str], Any] = {}
        self._acks: list[_Acks] = []  # appended to by delivery callbacks, settled after each poll
        self._callbacks: dict[tuple[int, str, str, float], Callable[[Any, Any], None]] = {}
        self._m_latency = metrics.COMMIT_TO_PUBLISH.labels(self.slot)
        self._m_txns = metrics.TRANSACTIONS.labels(self.slot)

    # --- setup -------------------------------------------------------------------------
    def setup(self) -> None:
        with slots.connect(self.settings) as conn:
            slots.ensure_publication(conn, self.settings.cdc.publication, self.settings.cdc.schema_name, self.tables)
            slots.ensure_slot(conn, self.slot)
            slots.check_not_lost(conn, self.slot)
        specs = cdc_topics(self.settings, self.tables, self.settings.cdc.schema_name)
        ensure_topics(self.settings, specs)
        self._known_topics.update(s.name for s in specs)

    # --- running -----------------------------------------------------------------------
    def run(self, stop: threading.Event, standby_notice: Callable[[str], None] | None = None) -> int:
        """Stream until ``stop`` is set; wait as a hot standby while another process holds the slot.

        Returns the last confirmed LSN. Everything acknowledged by Kafka is confirmed before return.
        """
        self.setup()
        while not stop.is_set():
            try:
                return self._stream(stop)
            except SlotInUseError as exc:
                if standby_notice:
                    standby_notice(str(exc))
                stop.wait(self.settings.cdc.standby_retry_s)
        return self.tracker.confirmed

    def _connect(self) -> ReplicationConnection:
        return ReplicationConnection(self.settings.pg.conninfo(replication="database", options=SESSION_OPTIONS))

    def _stream(self, stop: threading.Event) -> int:
        side = slots.connect(self.settings)
        stream = self._connect()
        try:
            try:
                stream.start(self.slot, self.settings.cdc.publication)
            except ReplicationError as exc:
                self._raise_if_lost(side, exc)
                raise
            now = time.monotonic()
            next_status = now + self.settings.cdc.status_interval_s
            next_heartbeat = now + self.settings.cdc.heartbeat_interval_s
            next_gauge = now
            while not stop.is_set():
                wait = IN_FLIGHT_WAIT_S if self.tracker.in_flight_any else IDLE_WAIT_S
                try:
                    data = stream.read(wait)
                except ReplicationError as exc:
                    self._raise_if_lost(side, exc)
                    raise
                reply = False
                handled = 0
                while data is not None:
                    reply |= self._handle(data)
                    handled += 1
                    if handled & 0xFF == 0:
                        # serve delivery reports while a backlog streams in: acks (and the
                        # confirmed position) do not wait for the socket to run dry
                        self._poll(0)
                    data = stream.read(0) if not reply else None
                self._poll(0)
                if self._failure is not None:
                    raise CdcError(f"Kafka did not accept a change event: {self._failure}")
                now = time.monotonic()
                if reply or now >= next_status:
                    self._send_status(stream, force=reply)
                    next_status = now + self.settings.cdc.status_interval_s
                if now >= next_heartbeat:
                    slots.emit_heartbeat(side)
                    next_heartbeat = now + self.settings.cdc.heartbeat_interval_s
                if now >= next_gauge:
                    self._update_gauges(side)
                    next_gauge = now + 5.0
            # graceful stop: deliver what is queued, confirm it, leave
            self._drain()
            self._send_status(stream, force=True)
            return self.tracker.confirmed
        finally:
            stream.close()
            side.close()

    def _drain(self) -> None:
        deadline = time.monotonic() + 60
        while self.tracker.in_flight_any and time.monotonic() < deadline:
            self.producer.flush(1.0)
            self._settle()
        if self._failure is not None:
            raise CdcError(f"Kafka did not accept a change event: {self._failure}")

    def _raise_if_lost(self, side: Any, exc: ReplicationError) -> None:
        if exc.sqlstate == "55000":
            slots.check_not_lost(side, self.slot)
            if "removed" in str(exc) or "invalidated" in str(exc) or "lost" in str(exc):
                raise SlotLostError(self.slot, str(exc)) from None

    def _send_status(self, stream: ReplicationConnection, force: bool) -> None:
        flushed = self.tracker.confirmed
        if force or flushed != self._last_sent_flush:
            stream.send_status(max(self._received, flushed), flushed)
            if flushed != self._last_sent_flush:
                metrics.CONFIRMED_LSN.labels(self.slot).set(flushed)
                if self.on_confirm:
                    self.on_confirm(flushed)
            self._last_sent_flush = flushed

    def _update_gauges(self, side: Any) -> None:
        status = slots.slot_status(side, self.slot)
        if status is not None:
            if status.lag_bytes is not None:
                metrics.SLOT_LAG_BYTES.labels(self.slot).set(status.lag_bytes)
            if status.retained_bytes is not None:
                metrics.SLOT_RETAINED_BYTES.labels(self.slot).set(status.retained_bytes)

    # --- one replication message -------------------------------------------------------
    def _handle(self, data: bytes | memoryview) -> bool:
        """Handle one CopyData frame; True if the server asked for an immediate reply."""
        if data[0] == 0x77 and self._txn_source is not None and len(data) > _PAYLOAD + 6 and data[_PAYLOAD] == 0x49:  # 'w' + 'I'
            # the hot path: an Insert of a relation whose writer is compiled, inside a
            # transaction whose source fields are written; tuple text -> envelope, no objects
            if type(data) is not bytes:
                data = bytes(data)
            (oid,) = _OID(data, _PAYLOAD + 1)
            codec = self._codecs.get(oid)
            if (
                codec is not None
                and codec.insert is not None
                and data[_PAYLOAD + 5] == 0x4E  # 'N'
                and codec.relation is self.cache.relations.get(oid)
            ):
                wal_start, wal_end = _XLOG_LSNS(data, 1)
                written = codec.insert(data, _PAYLOAD + 6, self._header, wal_start, self._txn_source)
                if written is not None:
                    if wal_end > self._received:
                        self._received = wal_end
                    target = self._insert_targets.get(oid)
                    if target is None:
                        relation = codec.relation
                        target = self._insert_targets[oid] = (
                            self._topic(relation),
                            self._callback(relation, "c", self._commit_unix_s),
                        )
                    self._send(target[0], written[1], written[0], target[1], None)
                    return False
        frame = parse_copy_message(data)
        if isinstance(frame, Keepalive):
            if frame.wal_end > self._received:
                self._received = frame.wal_end
            if not self.tracker.in_flight_any:
                self.tracker.idle_position(frame.wal_end)
            return frame.reply_requested
        if frame.wal_end > self._received:
            self._received = frame.wal_end
        message = decode(frame.payload)
        if isinstance(message, (Insert, Update, Delete)):
            begin = self._begin
            if begin is None:
                raise CdcError("row change outside a transaction")
            relation = self.cache.get(message.relation_oid)
            header = self._header
            if header is None:  # a custom encoder: the generic path
                src = SourceInfo(frame.wal_start, begin.final_lsn, begin.xid, pg_us_to_unix(begin.commit_time_us))
                for event in change_events(self.converter, relation, message, src):
                    self._produce(relation, event)
                return False
            codec = self._codecs.get(relation.oid)
            if codec is None or codec.relation is not relation:
                codec = self._codecs[relation.oid] = RelationCodec(relation, self.converter)
            txn = self._txn_source
            if txn is None:
                txn = self._txn_source = source_txn(begin.final_lsn, begin.xid, pg_us_to_unix(begin.commit_time_us))
                self._commit_unix_s = pg_us_to_unix(begin.commit_time_us) / 1e6
            commit_unix_s = self._commit_unix_s
            for op, key, body in change_bodies(codec, message, frame.wal_start, txn):
                self._send_event(relation, op, key, header + body, commit_unix_s)
        elif isinstance(message, Begin):
            self._begin = message
            self._txn_source = None
            self._txn_seq = self.tracker.begin()
            self._insert_targets.clear()
            if len(self._callbacks) > 4096:
                self._callbacks.clear()  # callbacks of finished transactions: only in-flight messages hold theirs
        elif isinstance(message, Commit):
            self.tracker.commit(self._txn_seq, message.end_lsn)
            self._begin = None
            self._txn_source = None
            self._m_txns.inc()
        elif isinstance(message, (Relation, TypeMessage)):
            if self.cache.update(message):
                self.schema_changes += 1
                log.info("schema change of %s.%s", message.namespace, message.name)  # type: ignore[union-attr]
        elif isinstance(message, Truncate):
            begin = self._begin
            assert begin is not None
            src = SourceInfo(frame.wal_start, begin.final_lsn, begin.xid, pg_us_to_unix(begin.commit_time_us))
            for oid in message.relation_oids:
                relation = self.cache.get(oid)
                self._produce(relation, truncate_event(relation, src))
        elif isinstance(message, LogicalMessage):
            pass  # heartbeats: their transaction's Commit is what lets the slot advance
        return False

    def _topic(self, relation: Relation) -> str:
        topic = self._topics.get(relation.oid)
        if topic is None:
            topic = cdc_topic_name(self.settings, relation.name, relation.namespace)
            if topic not in self._known_topics:
                # a table added to the publication behind our back: give it a topic first
                ensure_topics(self.settings, cdc_topics(self.settings, [relation.name], relation.namespace))
                self._known_topics.add(topic)
            self._topics[relation.oid] = topic
        return topic

    def _produce(self, relation: Relation, event: ChangeEvent) -> None:
        commit_unix_s = event.value["source"]["commit_time"] / 1e6
        self._send_event(relation, event.value["op"], event.key, self.encode(event.value), commit_unix_s)

    def _poll(self, timeout: float) -> None:
        self.producer.poll(timeout)
        if self._acks:
            self._settle()

    def _settle(self) -> None:
        """Apply the delivery reports served by the last poll: tracker, counters, latency, once per batch."""
        acks = self._acks
        if not acks:
            return
        now = time.time()
        tracker, latency, sample = self.tracker, self._m_latency, self.on_latency
        grouped = Counter(acks)
        acks.clear()
        for ack, count in grouped.items():
            tracker.acked(ack.seq, count)
            ack.counter.inc(count)
            seconds = now - ack.commit_unix_s
            observe_many(latency, seconds, count)
            if sample is not None:
                for _ in range(count):
                    sample(seconds)

    def _callback(self, relation: Relation, op: str, commit_unix_s: float) -> Callable[[Any, Any], None]:
        """The delivery callback shared by the messages of one transaction, table and op."""
        seq = self._txn_seq
        cache_key = (seq, relation.name, op, commit_unix_s)
        delivered = self._callbacks.get(cache_key)
        if delivered is not None:
            return delivered
        counter_key = (relation.name, op)
        counter = self._m_changes.get(counter_key)
        if counter is None:
            counter = metrics.CHANGES.labels(self.slot, relation.name, op)
            self._m_changes[counter_key] = counter
        ack = _Acks(seq, counter, commit_unix_s)
        append = self._acks.append

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is None:
                append(ack)
            elif self._failure is None:
                self._failure = err

        self._callbacks[cache_key] = delivered
        return delivered

    def _send_event(self, relation: Relation, op: str, key: bytes | None, value: bytes, commit_unix_s: float) -> None:
        topic = self._topic(relation)
        delivered = self._callback(relation, op, commit_unix_s)
        if key is None:
            # a truncate concerns every key: one copy per partition keeps it in order with each
            partitions = self._partition_count(topic)
            for partition in range(partitions):
                self._send(topic, value, None, delivered, partition)
        else:
            self._send(topic, value, key, delivered, None)

    def _send(self, topic: str, value: bytes, key: bytes | None, cb: Any, partition: int | None) -> None:
        self.tracker.sent(self._txn_seq)
        while True:
            try:
                if partition is None:
                    self.producer.produce(topic, value, key, on_delivery=cb)
                else:
                    self.producer.produce(topic, value, key, partition=partition, on_delivery=cb)
                return
            except BufferError:
                # the local queue is full (a huge transaction): let deliveries drain it
                self._poll(0.05)

    def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            meta = self.producer.list_topics(topic, timeout=10)
            count = len(meta.topics[topic].partitions) or 1
            self._partitions[topic] = count
        return count

