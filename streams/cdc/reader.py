"""The CDC loop: step 4 of 4 on the CDC path (transport -> pgoutput -> envelope -> **reader**).

Reads CopyData frames from the replication connection (:mod:`.transport`), decodes them
(:mod:`.pgoutput`), turns row changes into framed envelopes (:mod:`.envelope`) and hands
them to an idempotent producer; delivery reports tell the :class:`~.transport.AckTracker`
which position may be confirmed to the slot, and the loop confirms it.

Single-threaded. The socket read blocks (select) for up to half a second when nothing
is in flight, and for a millisecond while Kafka acknowledgements are pending, so
delivery callbacks (served by ``producer.poll``) move the confirmed position promptly.

The reader is a component, not a process: the service runner hands it the registry its
metrics go to, the :class:`~streams.service.health.Health` it reports ``postgres`` and
``kafka`` reachability to, and the stop event its signal handlers set. It takes the whole
:class:`~core.settings.Settings` because it is where the CDC component is wired: the
topic admin, topic names and the serde framing it calls take Settings; everything it
builds below itself gets only its concern (the replication connection and slot queries
``settings.pg``, the producer ``settings.kafka``, the loop ``settings.cdc``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import CollectorRegistry

from core.settings import Settings
from streams.admin import ensure_topics
from streams.cdc import slot as slots
from streams.cdc.envelope import (
    ChangeEvent, Encoder, RelationCodec, SourceInfo, change_bodies, change_events, keyed, make_encoder, masking,
    needs_primary_key, read_body, read_event, relation_tail, source_txn, truncate_event,
)
from streams.cdc.binary import TypeInfo, UnsupportedBinaryType, tuple_converter
from streams.cdc.errors import BinaryModeError, CdcError, SlotInUseError, SlotLostError
from streams.cdc.healing import Outage, RegistryOutage, stream_lost
from streams.cdc.incremental import WATERMARK_PREFIX, IncrementalSnapshots, Window
from streams.cdc.lsn import format_lsn
from streams.cdc.metrics import CdcMetrics, observe_many
from streams.cdc.pgoutput import (
    INSERT, NEW_TUPLE, STREAMED_TAGS, Begin, Commit, Delete, Insert, LogicalMessage, Relation, RelationCache,
    StreamAbort, StreamCommit, StreamStart, StreamStop, Truncate, TypeMessage, Update, decode, relation_oid, streamed,
)
from streams.cdc.spool import TxnSpool, placeholder, remove_stale, splice
from streams.cdc.typed_events import TypedEvents
from streams.cdc.typed_schemas import make_versions
from streams.cdc.transport import (
    PAYLOAD_OFFSET, SESSION_OPTIONS, XLOG_DATA, AckTracker, Keepalive, ReplicationConnection, ReplicationError,
    parse_copy_message, pg_us_to_unix, xlog_positions,
)
from streams.cdc.values import ValueConverter
from streams.kafka.clients import producer_config
from streams.retry import Backoff
from streams.serde.errors import RegistryUnavailableError
from streams.service.health import Health
from streams.topics import cdc_tables, cdc_topic_name, cdc_topics, cdc_transactions_topic

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the pgoutput messages the raw path may write without decoding: Insert, Update ('U')
_RAW_TAGS = (INSERT, 0x55)

IDLE_WAIT_S = 0.5
IN_FLIGHT_WAIT_S = 0.001
GAUGE_INTERVAL_S = 5.0
#: once every change received is acknowledged, the position is confirmed at once instead of
#: at the next ``status_interval_s``, but not more often than this: after a burst (a drained
#: backlog, a big transaction) the slot releases its WAL and the lag reads 0 without waiting
#: up to a second, and a steady stream of small transactions costs at most 10 updates/s
CAUGHT_UP_STATUS_GAP_S = 0.1
#: how often the signal table is read for incremental snapshot requests
SIGNAL_INTERVAL_S = 1.0
#: the first reconnection waits about this long; then twice as long each time, up to ``cdc.reconnect_max_s``
RECONNECT_FIRST_S = 0.5


class _Stopping(Exception):
    """The stop event was set while the reader waited for room in Kafka's queue."""


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


class CdcReader:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        health: Health | None = None,
        stop: threading.Event | None = None,
        producer: Producer | None = None,
        encoder: Encoder | None = None,
        on_confirm: Callable[[int], None] | None = None,
        on_latency: Callable[[float], None] | None = None,
    ) -> None:
        """``registry``, ``health`` and ``stop`` come from the service runner; without them the
        reader has its own (a private registry: nothing goes to prometheus_client's global one)."""
        self.settings = settings
        self.cdc = settings.cdc
        self.slot = settings.cdc.slot_name
        self.tables = cdc_tables(settings)
        self.health = health or Health()
        self.stop = stop or threading.Event()
        self.metrics = CdcMetrics(registry or CollectorRegistry(auto_describe=True), self.slot)
        # the `cdc` profile rides through a broker's loss (streams/kafka/clients.py,
        # PRODUCER_LEADER_CHANGES): acks=all and idempotent, each record retried across a
        # leader election for up to delivery.timeout.ms; the slot is confirmed only after
        # Kafka acknowledged, so a record that still fails stops the reader, never skips a change
        self.producer = producer or Producer(producer_config(settings.kafka, "cdc", error_cb=self._kafka_error))
        #: INSIGHTS_CDC_FORMAT=typed: per-table schemas (typed_events); every change takes that path,
        #: the generic envelope's fast path and encoder are not used
        self.typed: TypedEvents | None = None
        if self.cdc.format == "typed":
            self.typed = TypedEvents(settings, make_versions(settings), catalog=lambda: self._side)
        self.encode = encoder or (
            make_encoder(settings, [t.name for t in cdc_topics(settings, self.tables, self.cdc.schema_name)])
            if self.typed is None else Encoder(self._no_generic, None)
        )
        #: the serde framing of a body; None: every event goes through ``encode`` (the reference path)
        self._header: bytes | None = self.encode.header
        self.on_confirm = on_confirm
        self.on_latency = on_latency  # raw commit-to-ack samples, for the benchmark
        self.cache = RelationCache()
        self.converter = ValueConverter()
        self.tracker = AckTracker()
        self.schema_changes = 0
        # --- per relation
        self._codecs: dict[int, RelationCodec] = {}
        #: INSIGHTS_CDC_PGOUTPUT_BINARY: per relation OID, its tuples' binary values -> their text
        self._binary: dict[int, Callable[[list[Any]], list[Any]]] = {}
        self._type_info: dict[int, TypeInfo] = {}
        self._topics: dict[int, str] = {}
        self._known_topics: set[str] = set()
        self._partitions: dict[str, int] = {}
        # --- streamed transactions (cdc.streaming): the one whose block is open, each one's spool,
        # and the relations as its own Relation messages described them (pgoutput sends a stream
        # its own, which may differ from the ones of transactions sent whole meanwhile)
        self.streaming = self.cdc.streaming and (self.typed is not None or self._header is not None)
        self._stream_xid: int | None = None
        self._spools: dict[int, TxnSpool] = {}
        self._stream_relations: dict[int, dict[int, tuple[Relation, Callable[[list[Any]], list[Any]] | None]]] = {}
        #: per streamed transaction, its Relation messages as sent: at its commit they become everyone's
        self._stream_schemas: dict[int, dict[int, Relation]] = {}
        self._stream_codecs: dict[Relation, RelationCodec] = {}
        # --- per transaction
        self._begin: Begin | None = None
        self._txn_seq = -1
        self._txn_source: bytes | None = None  # source.commit_lsn, xid, commit_time, written
        self._commit_unix_s = 0.0
        #: per (relation OID, tag I or U), the topic and delivery callback of the raw path in the current transaction
        self._insert_targets: dict[tuple[int, int], tuple[str, Callable[[Any, Any], None]]] = {}
        # --- delivery
        self._failure: KafkaError | None = None
        self._acks: list[_Acks] = []  # appended to by delivery callbacks, settled after each poll
        self._callbacks: dict[tuple[int, str, str, float], Callable[[Any, Any], None]] = {}
        self._m_changes: dict[tuple[str, str], Any] = {}
        self._received = 0
        self._last_sent_flush = -1
        #: change events Kafka acknowledged
        self.delivered = 0
        # --- self-healing
        self.outage = Outage(log, self.cdc.reconnect_max_s)
        self.registry_outage = RegistryOutage(log, self.cdc.reconnect_max_s)
        self._stream_conn: ReplicationConnection | None = None
        self._side: psycopg.Connection[Any] | None = None  # heartbeats, gauges, catalog look-ups
        self._paused_since: float | None = None
        self._next_paused_status = 0.0
        self._pause_told = False
        self._set_up = False
        # --- incremental snapshots (DBLog watermarks); the window's table OID while one is open
        self.incremental = IncrementalSnapshots(
            settings.pg, self.cdc.schema_name, self.slot, self.cdc.incremental_chunk_size,
            key_of=lambda relation: RelationCodec(
                masking(relation, self.cdc.mask_columns.get(relation.name)), self.converter, snapshot=True
            ),
            include=self.cdc.include_columns,
            exclude=self.cdc.exclude_columns,
            session_options=SESSION_OPTIONS,
        )
        self._window_oid = -1
        # --- transaction metadata (cdc_transaction_topic): events per table of the open transaction
        self._txn_counts: dict[str, int] | None = {} if self.cdc.transaction_topic else None
        self._txn_topic = cdc_transactions_topic(settings).name

    # --- setup -------------------------------------------------------------------------
    def setup(self) -> None:
        """Publication, slot and topics, created if missing (idempotent)."""
        try:
            with slots.connect(self.settings.pg, "cdc-setup") as conn:
                # a publication without its slot: lost in a failover, never silently re-created
                slots.require_slot_unless_new(conn, self.slot, self.cdc.publication)
                slots.ensure_publication(
                    conn, self.cdc.publication, self.cdc.schema_name, self.tables,
                    self.cdc.include_columns, self.cdc.exclude_columns,
                )
                slots.ensure_slot(conn, self.slot)
                slots.check_not_lost(conn, self.slot)
        except CdcError as exc:
            self.health.failing("postgres", str(exc))
            raise
        self.health.ok("postgres")
        specs = cdc_topics(self.settings, self.tables, self.cdc.schema_name)
        if self._txn_counts is not None:
            specs.append(cdc_transactions_topic(self.settings))
        ensure_topics(self.settings, specs)
        self._known_topics.update(s.name for s in specs)

    # --- running -----------------------------------------------------------------------
    def run(self, standby_notice: Callable[[str], None] | None = None) -> int:
        """Stream until the stop event is set; wait as a hot standby while another process holds the slot.

        A lost stream (the walsender terminated, PostgreSQL restarting, a network cut, the
        broker away: :func:`.healing.stream_lost`) is reconnected with capped backoff and
        resumes from the newest position the reader knows is safe; anything else (a lost or
        missing slot, a wrong password, a missing publication) ends it. Returns the last
        confirmed LSN. Everything acknowledged by Kafka is confirmed before return.
        """
        delays = Backoff(initial=RECONNECT_FIRST_S, cap=self.cdc.reconnect_max_s).delays()
        start = 0
        while not self.stop.is_set():
            try:
                if not self._set_up:
                    self.setup()
                    self._set_up = True
                return self._stream(start)
            except SlotInUseError as exc:
                self.health.ok("postgres")  # it answered: the slot is busy, which is a standby's normal
                self.health.beat()
                if standby_notice and not self.outage.ongoing:
                    standby_notice(str(exc))
                start = self._forget_stream()
                self.stop.wait(self.cdc.standby_retry_s)
            except _Stopping:
                break
            except Exception as exc:
                if not stream_lost(exc):
                    raise
                start = self._forget_stream()
                if not self.outage.ongoing:
                    self.metrics.reconnects.inc()
                self.outage.lost(exc, format_lsn(start))
                if self.outage.attempts == 1:  # a new outage starts from the shortest wait
                    delays = Backoff(initial=RECONNECT_FIRST_S, cap=self.cdc.reconnect_max_s).delays()
                self.health.beat()
                self.stop.wait(next(delays))
        return self.tracker.confirmed

    def _forget_stream(self) -> int:
        """After a lost stream: drop the open transaction (it comes again) and say where to resume."""
        if self._txn_counts:
            self._txn_counts.clear()  # its BEGIN is sent again with it
        self.incremental.reset()
        self._window_oid = -1
        self._begin = None
        self._txn_source = None
        self._insert_targets.clear()
        self._received = 0
        self._last_sent_flush = -1
        self._poll(0)
        return self.tracker.resume()

    def _stream(self, start: int = 0) -> int:
        try:
            side = slots.connect(self.settings.pg, "cdc-heartbeat")
        except CdcError as exc:
            self.health.failing("postgres", str(exc))
            raise
        try:
            if self.outage.ongoing:
                # reconnected, maybe to a promoted standby: never stream from a slot that is not ours
                slots.require_slot_unless_new(side, self.slot, self.cdc.publication)
                slots.check_not_lost(side, self.slot)
            stream = ReplicationConnection.open(self.settings.pg, "cdc-stream", self.cdc.logical_decoding_work_mem)
        except (CdcError, psycopg.Error) as exc:
            side.close()
            self.health.failing("postgres", str(exc))
            raise
        self._stream_conn, self._side = stream, side
        try:
            try:
                stream.start(self.slot, self.cdc.publication, start, binary=self.cdc.pgoutput_binary,
                             streaming=self.streaming)
            except ReplicationError as exc:
                self._raise_if_lost(side, exc)
                raise
            self.outage.regained(format_lsn(start))
            self.metrics.connected.set(1)
            if self.streaming and remove_stale(self.slot, self.cdc.spool_dir or None):
                log.info("removed the spool files of a reader of slot %s that did not end cleanly", self.slot)
            self._loop(stream, side)
            # graceful stop: deliver what is queued, confirm it, leave
            self._drain()
            self._send_status(stream, force=True)
            return self.tracker.confirmed
        except (ReplicationError, psycopg.OperationalError) as exc:  # not SlotInUse/SlotLost: it answered
            self.health.failing("postgres", str(exc))
            raise
        finally:
            self.metrics.connected.set(0)
            self._drop_spools()  # in-progress streamed transactions come again whole on the next stream
            self._stream_conn = self._side = None
            stream.close()
            side.close()
            if self.typed is not None:
                self.typed.close()  # its connection to cdc_schemas; opened again when needed

    def _loop(self, stream: ReplicationConnection, side: psycopg.Connection[Any]) -> None:
        health, cdc = self.health, self.cdc
        now = time.monotonic()
        next_status = now + cdc.status_interval_s
        last_status = now
        next_heartbeat = now + cdc.heartbeat_interval_s
        next_gauge = now
        last_heard = now
        asked = False
        next_signals = now
        while not self.stop.is_set():
            health.beat()
            if self.tracker.in_flight_any:
                wait = IN_FLIGHT_WAIT_S
            elif self.tracker.confirmed != self._last_sent_flush:  # a caught-up status is due soon
                wait = min(IDLE_WAIT_S, max(0.0, last_status + min(CAUGHT_UP_STATUS_GAP_S, cdc.status_interval_s)
                                            - time.monotonic()))
            else:
                wait = IDLE_WAIT_S
            try:
                data = stream.read(wait)
            except ReplicationError as exc:
                self._raise_if_lost(side, exc)
                raise
            heard = data is not None
            if heard:
                health.ok("postgres")
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
            if heard:
                last_heard, asked = now, False
            elif now - last_heard > cdc.stream_timeout_s / 2:
                # a silent server: a cut network can keep the socket open for hours. Ask for
                # a keepalive; no answer within the timeout means the stream is lost.
                if now - last_heard > cdc.stream_timeout_s:
                    raise ReplicationError(
                        f"no message from the server for {now - last_heard:.0f} s: connection lost"
                    )
                if not asked:
                    stream.send_status(max(self._received, self.tracker.confirmed), self.tracker.confirmed, reply=True)
                    asked = True
            caught_up = (
                not self.tracker.in_flight_any
                and self.tracker.confirmed != self._last_sent_flush
                and now >= last_status + min(CAUGHT_UP_STATUS_GAP_S, cdc.status_interval_s)
            )
            if reply or caught_up or now >= next_status:
                self._send_status(stream, force=reply)
                next_status = now + cdc.status_interval_s
                last_status = now
            if now >= next_heartbeat:
                slots.emit_heartbeat(side)
                next_heartbeat = now + cdc.heartbeat_interval_s
            if now >= next_gauge:
                self._update_gauges(side)
                self._probe_kafka()
                next_gauge = now + GAUGE_INTERVAL_S
            if now >= next_signals:
                self.incremental.poll()
                next_signals = now + SIGNAL_INTERVAL_S
            incremental = self.incremental
            if incremental.tables and incremental.window is None:
                incremental.open_window()  # the next chunk as soon as the last one's high watermark passed

    def _drain(self) -> None:
        deadline = time.monotonic() + 60
        # a failed delivery is never acknowledged: waiting for it would only delay the error
        while self.tracker.in_flight_any and self._failure is None and time.monotonic() < deadline:
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
        self.metrics.received_lsn.set(self._received)
        if force or flushed != self._last_sent_flush:
            stream.send_status(max(self._received, flushed), flushed)
            if flushed != self._last_sent_flush:
                self.metrics.confirmed_lsn.set(flushed)
                if self.incremental.pending:
                    self.incremental.confirmed(flushed)
                if self.on_confirm:
                    self.on_confirm(flushed)
            self._last_sent_flush = flushed

    def _update_gauges(self, side: Any) -> None:
        status = slots.slot_status(side, self.slot)
        if status is not None:
            if status.lag_bytes is not None:
                self.metrics.slot_lag_bytes.set(status.lag_bytes)
            if status.retained_bytes is not None:
                self.metrics.slot_retained_bytes.set(status.retained_bytes)

    # --- Kafka reachability -------------------------------------------------------------
    def _kafka_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (brokers down, resolution, authentication), served by poll."""
        log.warning("kafka: %s", err)
        self.health.failing("kafka", str(err))

    def _probe_kafka(self) -> None:
        """While Kafka is failing and nothing is in flight to prove otherwise, ask for metadata:
        a reader with no changes to deliver must still see the broker come back."""
        if not self.health.is_failing("kafka") or self.tracker.in_flight_any:
            return
        try:
            self.producer.list_topics(next(iter(self._known_topics), None), timeout=1.0)
        except KafkaException as exc:
            self.health.failing("kafka", str(exc))
        else:
            self.health.ok("kafka")

    # --- one replication message -------------------------------------------------------
    def _handle(self, data: bytes | memoryview) -> bool:
        """Handle one CopyData frame; True if the server asked for an immediate reply."""
        if type(data) is not bytes:
            data = bytes(data)
        if (
            data[0] == XLOG_DATA
            and self._txn_source is not None
            and len(data) > PAYLOAD_OFFSET + 6
            and data[PAYLOAD_OFFSET] in _RAW_TAGS
            and self._insert_from_frame(data)
        ):
            return False
        frame = parse_copy_message(data)
        if frame.wal_end > self._received:
            self._received = frame.wal_end
        if isinstance(frame, Keepalive):
            if not self.tracker.in_flight_any:
                self.tracker.idle_position(frame.wal_end)
            return frame.reply_requested
        payload = frame.payload
        if self._stream_xid is not None and payload[0] in STREAMED_TAGS:
            subxid, body = streamed(payload)
            self._streamed(subxid, decode(body), frame.wal_start)
            return False
        message = decode(payload)
        if isinstance(message, (Insert, Update, Delete)):
            self._row_change(message, frame.wal_start)
        elif isinstance(message, Begin):
            self._open_txn(message)
        elif isinstance(message, Commit):
            self._close_txn(message)
        elif isinstance(message, StreamStart):
            self._stream_start(message)
        elif isinstance(message, StreamStop):
            self._stream_xid = None
        elif isinstance(message, StreamCommit):
            self._stream_commit(message)
        elif isinstance(message, StreamAbort):
            self._stream_abort(message)
        elif isinstance(message, (Relation, TypeMessage)):
            self._relation(message)
        elif isinstance(message, Truncate):
            src = self._source(frame.wal_start)
            for oid in message.relation_oids:
                relation = self.cache.get(oid)
                if self.typed is not None:
                    typed = self.typed
                    value = self._typed(lambda: typed.truncate(relation, src), frame.wal_start)
                    self._send_event(relation, "t", None, value)
                else:
                    self._produce(relation, truncate_event(relation, src))
                if oid == self._window_oid and self.incremental.window is not None:
                    self.incremental.window.rows.clear()  # the chunk's rows are gone
        elif isinstance(message, LogicalMessage):
            # heartbeats: their transaction's Commit is what lets the slot advance
            if message.prefix == WATERMARK_PREFIX:
                self._watermark(message, frame.wal_start)
        return False

    def _insert_from_frame(self, data: bytes) -> bool:
        """The hot path: an Insert, or an Update without an old tuple (the same event but for its
        op), of a relation with a generated writer, from the raw frame to the producer with no
        message object. False: not the plain case (an old tuple, unchanged TOAST, binary values,
        a delete), decode it instead."""
        (oid,) = relation_oid(data, PAYLOAD_OFFSET + 1)
        codec = self._codecs.get(oid)
        if codec is None or data[PAYLOAD_OFFSET + 5] != NEW_TUPLE:
            return False
        tag = data[PAYLOAD_OFFSET]
        wal_start, wal_end = xlog_positions(data, 1)
        written = codec.insert(data, PAYLOAD_OFFSET + 6, self._header, wal_start, self._txn_source,
                               codec.insert_head if tag == INSERT else codec.update_head)
        if written is None:
            return False
        if wal_end > self._received:
            self._received = wal_end
        if oid == self._window_oid:
            self._in_window(written[0])
        if self._txn_counts is not None:
            self._count(codec.relation)
        target = self._insert_targets.get((oid, tag))
        if target is None:
            relation = codec.relation
            target = self._insert_targets[(oid, tag)] = (
                self._topic(relation), self._callback(relation, "c" if tag == INSERT else "u")
            )
        self._send(target[0], written[1], written[0], target[1], None)
        return True

    def _relation(self, message: Relation | TypeMessage) -> None:
        if isinstance(message, Relation):
            # the record key: primary key, identity index, or every column (envelope.keyed)
            side = self._side
            primary = slots.primary_key(side, message.oid) if side is not None and needs_primary_key(message) else None
            message = masking(keyed(message, primary), self.cdc.mask_columns.get(message.name))
        if self.cache.update(message):
            self.schema_changes += 1
            log.info("schema change of %s.%s", message.namespace, message.name)
        if isinstance(message, Relation) and self.typed is not None:
            self.typed.relation(message)  # its next change checks and registers a changed schema
        if isinstance(message, Relation) and self.cdc.pgoutput_binary:
            try:
                self._binary[message.oid] = tuple_converter(message.columns, self._describe_type)
            except UnsupportedBinaryType as exc:
                raise BinaryModeError(f"{message.namespace}.{message.name}", exc.column,
                                      self._type_name(exc.type_oid)) from None
        if isinstance(message, Relation) and self._header is not None:
            codec = self._codecs.get(message.oid)
            if codec is None or codec.relation != message:
                # written once per Relation message: the writers of every change until the next one
                self._codecs[message.oid] = RelationCodec(message, self.converter)

    def _typed(self, write: Callable[[], T], wal_start: int) -> T:
        """A typed event's ``write``, waited out in place while the schema registry is unavailable.

        ``write`` has no effect until it returns (describe, resolve, encode), so calling it again
        writes the same events: the change is published when the registry answers, after every
        change before it and before every change after it. Meanwhile the stream is not read
        (the slot keeps the changes) but is kept alive, and Kafka's acks keep confirming.
        A refusal (``RegistryRefusedError``) or an incompatible schema is not waited out.
        """
        outage = self.registry_outage
        try:
            result = write()
        except RegistryUnavailableError as exc:
            delays = Backoff(initial=RECONNECT_FIRST_S, cap=self.cdc.reconnect_max_s).delays()
            self.metrics.registry_outages.inc()
            while True:
                outage.lost(exc, format_lsn(wal_start))
                self.health.failing("schema_registry", str(exc))
                self._wait(next(delays))
                try:
                    result = write()
                    break
                except RegistryUnavailableError as again:
                    exc = again
            outage.regained()
            self.health.ok("schema_registry")
        return result

    def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` without reading the stream: serve Kafka's acks and keep the walsender's
        status updates coming (without them it ends the stream after wal_sender_timeout)."""
        deadline = time.monotonic() + seconds
        while True:
            if self.stop.is_set():
                raise _Stopping()
            self.health.beat()
            now = time.monotonic()
            stream = self._stream_conn
            if stream is not None and now >= self._next_paused_status:
                self._next_paused_status = now + self.cdc.status_interval_s
                try:
                    self._send_status(stream, force=True)
                except ReplicationError:
                    pass  # the loop notices on its next read
            if now >= deadline:
                return
            self._poll(min(0.05, deadline - now))

    @staticmethod
    def _no_generic(_value: dict[str, Any]) -> bytes:
        raise CdcError("a generic envelope in typed mode")  # every typed event goes through self.typed

    def _source(self, wal_start: int) -> SourceInfo:
        begin = self._begin
        if begin is None:
            raise CdcError("row change outside a transaction")
        return SourceInfo(wal_start, begin.final_lsn, begin.xid, pg_us_to_unix(begin.commit_time_us))

    def _describe_type(self, type_oid: int) -> TypeInfo:
        """(typtype, base type, array element) of a type the binary converters do not know."""
        if type_oid not in self._type_info:
            side = self._side
            row = None if side is None else side.execute(
                "SELECT typtype::text, typbasetype::int8, CASE WHEN typcategory = 'A' THEN typelem::int8 ELSE 0 END"
                "  FROM pg_type WHERE oid = %s", (type_oid,),
            ).fetchone()
            self._type_info[type_oid] = None if row is None else (row[0], row[1], row[2])
        return self._type_info[type_oid]

    def _type_name(self, type_oid: int) -> str:
        side = self._side
        row = None if side is None else side.execute("SELECT format_type(%s, NULL)", (type_oid,)).fetchone()
        return row[0] if row is not None else f"OID {type_oid}"

    def _as_text(
        self, message: Insert | Update | Delete, convert: Callable[[list[Any]], list[Any]] | None = None
    ) -> Insert | Update | Delete:
        """Binary mode: the message with every binary value turned into the text PostgreSQL prints
        (streams.cdc.binary), so that every path below writes the same events as in text mode."""
        convert = convert or self._binary.get(message.relation_oid)
        if convert is None:
            return message  # before its Relation message: cache.get raises the protocol error
        if type(message) is Insert:
            return Insert(message.relation_oid, convert(message.new))
        if type(message) is Delete:
            return Delete(message.relation_oid, message.old_kind, convert(message.old))
        assert type(message) is Update
        old = None if message.old is None else convert(message.old)
        return Update(message.relation_oid, message.old_kind, old, convert(message.new))

    # --- transactions, whole or streamed --------------------------------------------------
    def _open_txn(self, message: Begin) -> None:
        self._begin = message
        self._txn_seq = self.tracker.begin()
        commit_unix_us = pg_us_to_unix(message.commit_time_us)
        self._txn_source = source_txn(message.final_lsn, message.xid, commit_unix_us)
        self._commit_unix_s = commit_unix_us / 1e6
        self._insert_targets.clear()
        if len(self._callbacks) > 4096:
            self._callbacks.clear()  # callbacks of finished transactions: only in-flight messages hold theirs

    def _close_txn(self, message: Commit) -> None:
        if self._txn_counts:
            self._transaction_end(message)
        self.tracker.commit(self._txn_seq, message.end_lsn)
        if self.incremental.pending:
            self.incremental.committed(self._txn_seq, message.end_lsn)
        self._begin = None
        self._txn_source = None
        self.metrics.transactions.inc()

    def _stream_start(self, message: StreamStart) -> None:
        self._stream_xid = message.xid
        spool = self._spools.get(message.xid)
        if message.first_segment or spool is None:
            if spool is not None:
                spool.close()
            self._spools[message.xid] = TxnSpool(message.xid, self.slot, self.cdc.spool_dir or None)
            self._stream_relations[message.xid] = {}
            self._stream_schemas[message.xid] = {}

    def _streamed(self, subxid: int, message: Any, wal_start: int) -> None:
        """A message inside a stream block: a change is encoded now, with a placeholder for its
        commit (spool module doc), and spooled; the stream's Relation messages are its own."""
        xid = self._stream_xid
        assert xid is not None
        spool = self._spools[xid]
        relations = self._stream_relations[xid]
        if isinstance(message, Relation):
            self._stream_schemas[xid][message.oid] = message
            side = self._side
            primary = slots.primary_key(side, message.oid) if side is not None and needs_primary_key(message) else None
            relation = masking(keyed(message, primary), self.cdc.mask_columns.get(message.name))
            convert = None
            if self.cdc.pgoutput_binary:
                try:
                    convert = tuple_converter(relation.columns, self._describe_type)
                except UnsupportedBinaryType as exc:
                    raise BinaryModeError(f"{relation.namespace}.{relation.name}", exc.column,
                                          self._type_name(exc.type_oid)) from None
            relations[relation.oid] = (relation, convert)
            return
        if not isinstance(message, (Insert, Update, Delete, Truncate)):
            return  # types, and logical messages: heartbeats and watermarks are tiny transactions, never streamed
        src = SourceInfo(wal_start, 0, xid, 0)
        if isinstance(message, Truncate):
            for oid in message.relation_oids:
                relation = relations[oid][0] if oid in relations else self.cache.get(oid)
                if self.typed is not None:
                    typed = self.typed
                    value = self._typed(lambda: typed.truncate(relation, src), wal_start)  # noqa: B023
                else:
                    value = self.encode(truncate_event(relation, src).value)
                spool.append(subxid, relation, "t", None, value, self._tail_len(relation))
            return
        if message.relation_oid in relations:
            relation, convert = relations[message.relation_oid]
        else:
            relation, convert = self.cache.get(message.relation_oid), self._binary.get(message.relation_oid)
        if convert is not None:
            message = self._as_text(message, convert)
        if self.typed is not None:
            typed = self.typed
            events = self._typed(lambda: typed.changes(relation, message, src), wal_start)
        else:
            codec = self._stream_codecs.get(relation)
            if codec is None:
                if len(self._stream_codecs) > 256:
                    self._stream_codecs.clear()
                codec = self._stream_codecs[relation] = RelationCodec(relation, self.converter)
            header = self._header or b""
            events = [(op, key, header + body)
                      for op, key, body in change_bodies(codec, message, wal_start, placeholder(xid))]
        tail_len = self._tail_len(relation)
        for op, key, value in events:
            spool.append(subxid, relation, op, key, value, tail_len)

    @staticmethod
    def _tail_len(relation: Relation) -> int:
        return len(relation_tail(relation.namespace, relation.name, False))

    def _stream_commit(self, message: StreamCommit) -> None:
        """Publish a streamed transaction as if it had come whole: its events in order, each with
        the commit's LSN and time, tracked as one transaction (confirmable once all are acknowledged)."""
        xid = message.xid
        spool = self._spools.pop(xid, None)
        self._stream_relations.pop(xid, None)
        # pgoutput now counts the stream's Relation messages as sent to everyone (cleanup_rel_sync_cache):
        # a later transaction sent whole gets none, so they describe its tables too
        for relation in self._stream_schemas.pop(xid, {}).values():
            self._relation(relation)
        self._open_txn(Begin(message.commit_lsn, message.commit_time_us, xid))
        txn = self._txn_source
        assert txn is not None
        try:
            if spool is not None:
                window = self._window_oid
                for event in spool.events():
                    if event.relation.oid == window:
                        self._in_window(event.key)
                    self._send_event(event.relation, event.op, event.key,
                                     splice(event.value, event.tail_len, xid, txn))
        finally:
            if spool is not None:
                spool.close()
        self._close_txn(Commit(message.flags, message.commit_lsn, message.end_lsn, message.commit_time_us))
        self.metrics.streamed_transactions.inc()

    def _stream_abort(self, message: StreamAbort) -> None:
        spool = self._spools.get(message.xid)
        if spool is None:
            return
        if message.subxid == message.xid:
            spool.close()
            del self._spools[message.xid]
            self._stream_relations.pop(message.xid, None)
            self._stream_schemas.pop(message.xid, None)
            log.debug("streamed transaction %d rolled back: %d events dropped", message.xid, spool.count)
        else:
            dropped = spool.abort_subtransaction(message.subxid)
            log.debug("subtransaction %d of streamed transaction %d rolled back: %d events dropped",
                      message.subxid, message.xid, dropped)

    def _drop_spools(self) -> None:
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()
        self._stream_relations.clear()
        self._stream_schemas.clear()
        self._stream_xid = None

    def _row_change(self, message: Insert | Update | Delete, wal_start: int) -> None:
        relation = self.cache.get(message.relation_oid)
        if self._binary:
            message = self._as_text(message)
        if self.typed is not None:
            window = relation.oid == self._window_oid
            typed, src = self.typed, self._source(wal_start)
            for op, key, value in self._typed(lambda: typed.changes(relation, message, src), wal_start):
                if window:
                    self._in_window(key)
                self._send_event(relation, op, key, value)
            return
        if self._header is None or self._txn_source is None:  # no framing we can write: the reference path
            for event in change_events(self.converter, relation, message, self._source(wal_start)):
                if relation.oid == self._window_oid:
                    self._in_window(event.key)
                self._produce(relation, event)
            return
        codec = self._codecs[relation.oid]
        window = relation.oid == self._window_oid
        for op, key, body in change_bodies(codec, message, wal_start, self._txn_source):
            if window:
                self._in_window(key)
            self._send_event(relation, op, key, self._header + body)

    # --- transaction metadata ---------------------------------------------------------------
    def _count(self, relation: Relation) -> None:
        counts = self._txn_counts
        assert counts is not None
        if not counts:
            self._transaction_record({"status": "BEGIN"})  # lazily: transactions without changes have none
        name = f"{relation.namespace}.{relation.name}"
        counts[name] = counts.get(name, 0) + 1

    def _transaction_end(self, commit: Commit) -> None:
        counts = self._txn_counts
        assert counts is not None
        self._transaction_record({
            "status": "END",
            "end_lsn": commit.end_lsn,
            "event_count": sum(counts.values()),
            "data_collections": [{"data_collection": t, "event_count": n} for t, n in counts.items()],
        })
        counts.clear()

    def _transaction_record(self, fields: dict[str, Any]) -> None:
        begin = self._begin
        if begin is None:
            return
        value = {"xid": begin.xid, "commit_lsn": begin.final_lsn,
                 "commit_time": pg_us_to_unix(begin.commit_time_us), **fields}
        self._send(self._txn_topic, json.dumps(value, separators=(",", ":")).encode(),
                   json.dumps({"xid": begin.xid}).encode(), self._meta_callback(), None)

    def _meta_callback(self) -> Callable[[Any, Any], None]:
        """Delivery of a metadata record: tracked with its transaction, counted as no change."""
        seq, commit_unix_s = self._txn_seq, self._commit_unix_s
        cache_key = (seq, "", "tx", commit_unix_s)
        delivered = self._callbacks.get(cache_key)
        if delivered is None:
            ack = _Acks(seq, self.metrics.transaction_records, commit_unix_s)
            append = self._acks.append

            def delivered(err: KafkaError | None, _msg: Any) -> None:
                if err is None:
                    append(ack)
                elif self._failure is None:
                    self._failure = err
                    self.health.failing("kafka", str(err))

            self._callbacks[cache_key] = delivered
        return delivered

    # --- incremental snapshots ------------------------------------------------------------
    def _in_window(self, key: bytes | None) -> None:
        """A change inside a chunk's window: the streamed change wins over the chunk's row."""
        window = self.incremental.window
        if window is not None and window.open:
            window.discard(key)

    def _watermark(self, message: LogicalMessage, wal_start: int) -> None:
        found = self.incremental.watermark(message.content)
        if found is None:
            return
        kind, window = found
        if kind == "low":
            self._window_oid = window.table.relation.oid
            return
        self._window_oid = -1
        self._publish_window(window, wal_start)

    def _publish_window(self, window: Window, wal_start: int) -> None:
        """The chunk's rows left at its high watermark, as read events at that position."""
        relation = window.codec.relation
        if self.typed is not None:
            src = self._source(wal_start)
            src = SourceInfo(src.lsn, src.commit_lsn, src.xid, src.commit_time_us, snapshot=True)
            typed = self.typed
            for values in window.rows.values():
                key, value = self._typed(lambda: typed.read(relation, values, src), wal_start)  # noqa: B023
                self._send_event(relation, "r", key, value)
        elif self._header is not None and self._txn_source is not None:
            for values in window.rows.values():
                key, body = read_body(window.codec, values, wal_start, self._txn_source)
                self._send_event(relation, "r", key, self._header + body)
        else:
            src = self._source(wal_start)
            src = SourceInfo(src.lsn, src.commit_lsn, src.xid, src.commit_time_us, snapshot=True)
            for values in window.rows.values():
                self._produce(relation, read_event(self.converter, relation, values, src))
        self.incremental.published(window, self._txn_seq)

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
        self._send_event(relation, event.value["op"], event.key, self.encode(event.value))

    # --- delivery ------------------------------------------------------------------------
    def _poll(self, timeout: float) -> None:
        self.producer.poll(timeout)
        if self._acks:
            self._settle()

    def _settle(self) -> None:
        """Apply the delivery reports served by the last poll: tracker, counters, latency, once per batch."""
        acks = self._acks
        if not acks:
            return
        self.health.ok("kafka")
        now = time.time()
        tracker, latency, sample = self.tracker, self.metrics.commit_to_publish, self.on_latency
        grouped = Counter(acks)
        acks.clear()
        self.metrics.last_event_at.set(now)
        self.metrics.last_event_time.set(max(ack.commit_unix_s for ack in grouped))
        meta = self.metrics.transaction_records
        for ack, count in grouped.items():
            if ack.counter is meta:  # transaction metadata: no change, no latency sample
                tracker.acked(ack.seq, count)
                meta.inc(count)
                continue
            self.delivered += count
            tracker.acked(ack.seq, count)
            ack.counter.inc(count)
            seconds = now - ack.commit_unix_s
            observe_many(latency, seconds, count)
            if sample is not None:
                for _ in range(count):
                    sample(seconds)

    def _callback(self, relation: Relation, op: str) -> Callable[[Any, Any], None]:
        """The delivery callback shared by the messages of one transaction, table and op."""
        seq, commit_unix_s = self._txn_seq, self._commit_unix_s
        cache_key = (seq, relation.name, op, commit_unix_s)
        delivered = self._callbacks.get(cache_key)
        if delivered is not None:
            return delivered
        counter = self._m_changes.get((relation.name, op))
        if counter is None:
            counter = self._m_changes[(relation.name, op)] = self.metrics.changes(relation.name, op)
        ack = _Acks(seq, counter, commit_unix_s)
        append = self._acks.append

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is None:
                append(ack)
            elif self._failure is None:
                self._failure = err
                self.health.failing("kafka", str(err))

        self._callbacks[cache_key] = delivered
        return delivered

    def _send_event(self, relation: Relation, op: str, key: bytes | None, value: bytes) -> None:
        if self._txn_counts is not None:
            self._count(relation)
        topic = self._topic(relation)
        delivered = self._callback(relation, op)
        if op == "t":
            # a truncate concerns every key: one copy per partition keeps it in order with each
            # (a row change without a key is one record, whichever path wrote it)
            for partition in range(self._partition_count(topic)):
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
                if self._paused_since is not None:
                    self._resumed()
                return
            except BufferError:
                # the local queue is full (a huge transaction, or the broker away): stop
                # reading, and so decoding, until deliveries make room; memory stays bounded
                self._pause()

    def _pause(self) -> None:
        """Wait for room in the producer's queue; the slot keeps everything meanwhile."""
        now = time.monotonic()
        if self._paused_since is None:
            self._paused_since = now
            self._next_paused_status = now
            self.metrics.paused.set(1)
        elif now - self._paused_since > 5 and not self._pause_told:
            # a full queue for seconds is an outage, not a big transaction: say it once
            self._pause_told = True
            log.warning(
                "Kafka's queue is full (%d changes waiting for the broker): reading paused", self.tracker.in_flight,
                extra={"in_flight": self.tracker.in_flight},
            )
        if self.stop.is_set():
            raise _Stopping()
        self.health.beat()
        self._poll(0.05)
        stream = self._stream_conn
        if stream is not None and now >= self._next_paused_status:
            # the walsender waits for our replies: without them it ends the stream after
            # wal_sender_timeout, and the reader would reconnect for nothing
            self._next_paused_status = now + self.cdc.status_interval_s
            try:
                self._send_status(stream, force=True)
            except ReplicationError:
                pass  # the loop notices on its next read

    def _resumed(self) -> None:
        if self._pause_told:
            log.info(
                "Kafka accepts changes again after %.1f s: reading resumed", time.monotonic() - (self._paused_since or 0),
            )
        self._paused_since = None
        self._pause_told = False
        self.metrics.paused.set(0)

    def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            meta = self.producer.list_topics(topic, timeout=10)
            count = len(meta.topics[topic].partitions) or 1
            self._partitions[topic] = count
        return count
