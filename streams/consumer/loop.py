"""The consumer loop every sink shares: Kafka batches into PostgreSQL, exactly once in effect.

One iteration:

1. ``consume(num_messages=batch_size, timeout=batch_wait)`` a batch (auto-commit off);
2. decode, validate and map each record (pure; a bad record becomes a dead letter);
3. create any missing time partition the rows need, in its own short transaction;
4. in ONE transaction: lock the batch's rows in ``consumer_offsets`` (the fence), skip
   records already stored by a previous owner, write the rows (records that violate a
   constraint on their own are isolated by bisection), store the next offsets, deliver
   the dead letters, commit;
5. commit the same offsets to Kafka (asynchronously; for lag tools only).

Steps 3-5 of batch N run on a writer thread while the main thread consumes and prepares
batch N+1 (``pipeline=True``, the default): PostgreSQL's share of the work overlaps
Python's. At most one batch is in flight; the main thread waits for it before it writes
the next one, before a rebalance callback touches offsets, and before it leaves, so
batches still commit strictly in order and the connection is never shared.

Transient failures (PostgreSQL restarting, the broker away, serialization conflicts)
retry step 3-4 with capped exponential backoff, forever, never skipping. On partition
assignment the loop seeks to the offsets stored in PostgreSQL; records of partitions
revoked while a batch was fetched are left for their new owner. SIGTERM/SIGINT finish
the batch in hand, commit, leave the group and return.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from core.errors import InsightsError
from core.settings import Settings
from streams.consumer import offsets
from streams.consumer.isolate import write_isolating
from streams.consumer.policy import Action, ErrorPolicy, default_policy, describe
from streams.consumer.sink import Item, Sink
from streams.dlq import DeadLetter, DeadLetterQueue
from streams.metrics import ConsumerMetrics, MetricsServer
from streams.pg.partitions import ensure_partitions_for
from streams.retry import Backoff, Stopped, retry_transient
from streams.serde import RecordContext, make_deserializer
from streams.topics import event_topics

log = logging.getLogger("insights.consumer")

Decoder = Callable[[bytes, Any], dict[str, Any]]

# librdkafka properties the loop's correctness depends on: overrides cannot change them
_PROTECTED = {"enable.auto.commit", "enable.auto.offset.store", "group.id", "partition.assignment.strategy"}


class ConsumerError(InsightsError):
    """The consumer cannot run (missing topic, fatal broker error, a bug in a sink)."""


@dataclass
class BatchResult:
    consumed: int = 0
    stored: int = 0
    skipped: int = 0  # already stored by a previous owner of the partition
    dead_letters: int = 0


def topic_for_subject(settings: Settings, subject: str) -> str:
    for spec in event_topics(settings):
        if spec.value_subject == subject:
            return spec.name
    raise ConsumerError(f"no topic is declared for subject {subject!r} in streams/topics.py")


def default_decoder(settings: Settings, subject: str) -> tuple[Decoder, Callable[[str, int, int], Any]]:
    """The project's Avro deserializer and the context type it takes."""
    return make_deserializer(settings, subject), RecordContext


class ConsumerLoop:
    def __init__(
        self,
        settings: Settings,
        sink: Sink[Any],
        *,
        topic: str | None = None,
        group: str | None = None,
        decoder: Decoder | None = None,
        context: Callable[[str, int, int], Any] | None = None,
        policy: ErrorPolicy = default_policy,
        backoff: Backoff = Backoff(initial=0.2, cap=5.0),
        metrics_port: int | None = None,
        stuck_after: float = 60.0,
        auto_offset_reset: str = "earliest",
        max_batches: int | None = None,
        idle_exit_after: float | None = None,
        pipeline: bool = True,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.topic = topic or topic_for_subject(settings, sink.subject)
        self.group = group or settings.consumer.group
        if decoder is None:
            decoder, context = default_decoder(settings, sink.subject)
        self.decode = decoder
        self.context = context or (lambda topic, partition, offset: None)
        self.policy = policy
        self.backoff = backoff
        self.auto_offset_reset = auto_offset_reset
        self.metrics = ConsumerMetrics(sink.name, self.group, stuck_after=stuck_after)
        self.metrics_port = settings.service.metrics_port if metrics_port is None else metrics_port
        self.metrics_server: MetricsServer | None = None
        #: for tests and the benchmark: stop after this many batches / this long without records
        self.max_batches = max_batches
        self.idle_exit_after = idle_exit_after
        self.stop = threading.Event()
        self.totals = BatchResult()
        self._assigned: set[tuple[str, int]] = set()
        self._ensured: set[tuple[str, date]] = set()
        self._conn: psycopg.Connection | None = None
        self._consumer: Consumer | None = None
        self._dlq = DeadLetterQueue(settings, self.group)
        #: one writer thread, at most one batch in flight (see the module docstring)
        self.pipeline = pipeline
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: Future[tuple[BatchResult, Mapping[tuple[str, int], int]]] | None = None

    # --- lifecycle -------------------------------------------------------------------
    def request_stop(self, *_args: object) -> None:
        self.stop.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)

    def consumer_config(self) -> dict[str, Any]:
        conf = self.settings.kafka.client_config(
            **{
                "group.id": self.group,
                "client.id": f"insights-{self.sink.name}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": self.auto_offset_reset,
                "partition.assignment.strategy": "cooperative-sticky",
                "on_commit": self._on_commit,
                "error_cb": self._on_kafka_error,
            }
        )
        conf.update({k: v for k, v in self.settings.kafka.overrides.items() if k not in _PROTECTED})
        return conf

    def run(self) -> BatchResult:
        """Consume until stopped; return the totals. Raises ConsumerError on a fatal fault."""
        self._install_signal_handlers()
        if self.metrics_port:
            self.metrics_server = MetricsServer(self.metrics, self.metrics_port).start()
            log.info("metrics endpoint up", extra={"port": self.metrics_server.port})
        consumer = Consumer(self.consumer_config())
        self._consumer = consumer
        try:
            self._require_topic(consumer)
            consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
            log.info("consuming", extra={"topic": self.topic, "group": self.group, "sink": self.sink.name})
            try:
                self._loop(consumer)
            finally:
                self._finish_inflight_quietly()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            log.info("leaving the group", extra={"topic": self.topic, "group": self.group, **vars(self.totals)})
            consumer.close()  # leaves the group: partitions move to the others at once
            self._consumer = None
            if self._conn is not None:
                self._conn.close()
            if self.metrics_server is not None:
                self.metrics_server.stop()
        return self.totals

    def _loop(self, consumer: Consumer) -> None:
        try:
            self._consume(consumer)
        except Stopped:  # stopped while a batch was being retried
            self._log_abandoned()

    def _log_abandoned(self) -> None:
        log.warning("stopped while retrying: batch abandoned, it will be redelivered", extra={"topic": self.topic})

    def _consume(self, consumer: Consumer) -> None:
        batches = 0
        last_data = time.monotonic()
        batch_size = self.settings.consumer.batch_size
        wait = self.settings.consumer.batch_wait_ms / 1000.0
        while not self.stop.is_set():
            messages = consumer.consume(num_messages=batch_size, timeout=max(wait, 0.001))
            self.metrics.beat()
            if self._inflight is not None and self._inflight.done():
                self._finish_inflight()  # a failed write surfaces now, not at the next batch
            if not messages:
                if self.idle_exit_after is not None and time.monotonic() - last_data > self.idle_exit_after:
                    return
                continue
            last_data = time.monotonic()
            self.process(messages)
            self.metrics.beat()
            batches += 1
            if self.max_batches is not None and batches >= self.max_batches:
                return

    def _require_topic(self, consumer: Consumer) -> None:
        meta = consumer.list_topics(self.topic, timeout=15)
        found = meta.topics.get(self.topic)
        if found is None or found.error is not None:
            raise ConsumerError(f"topic {self.topic} does not exist: create it with `insights topics create`")

    # --- one batch -------------------------------------------------------------------
    def process(self, messages: list[Message]) -> BatchResult:
        """Decode one batch here, then write and commit it (the unit of atomicity).

        Pipelined, the write runs on the writer thread and this returns the result of
        the *previous* batch (empty for the first); otherwise it writes in place.
        """
        started = time.perf_counter()
        items: list[Item[Any]] = []
        letters: list[DeadLetter] = []
        next_offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_message_error(err)
                continue
            key = (msg.topic(), msg.partition())
            if self._consumer is not None and key not in self._assigned:
                continue  # revoked while this batch was fetched: the new owner reads it
            offset = msg.offset()
            next_offsets[key] = offset + 1
            prepared = self._prepare(msg, offset)
            if isinstance(prepared, DeadLetter):
                letters.append(prepared)
            else:
                items.append(prepared)
        self.metrics.messages.labels(self.topic).inc(len(messages))
        if not next_offsets:
            return BatchResult()
        stamps = self.sink.timestamps([item.rows for item in items]) if items else {}
        if not self.pipeline:
            result, _ = self._write_batch(items, letters, next_offsets, stamps, started)
            self._commit_kafka(next_offsets)
            return result
        previous = self._finish_inflight()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.sink.name}-writer")
        self._inflight = self._writer.submit(self._write_batch, items, letters, next_offsets, stamps, started)
        return previous

    def _finish_inflight(self) -> BatchResult:
        """Wait for the batch on the writer thread; its failure is raised here.

        The Kafka offset commit happens here, on the consumer's own thread: the writer
        thread never touches the Kafka consumer.
        """
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return BatchResult()
        result, next_offsets = inflight.result()
        self._commit_kafka(next_offsets)
        return result

    def _finish_inflight_quietly(self) -> None:
        try:
            self._finish_inflight()
        except Stopped:
            self._log_abandoned()

    def _write_batch(
        self,
        items: list[Item[Any]],
        letters: list[DeadLetter],
        next_offsets: Mapping[tuple[str, int], int],
        stamps: Mapping[str, Iterable[datetime]],
        started: float,
    ) -> tuple[BatchResult, Mapping[tuple[str, int], int]]:
        """Steps 3-4 (PostgreSQL only): runs on the writer thread when pipelined."""

        def attempt() -> BatchResult:
            return self._commit(items, letters, next_offsets, stamps)

        result = retry_transient(attempt, backoff=self.backoff, stop=self.stop, on_retry=self._on_retry)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for name, value in vars(result).items():
            setattr(self.totals, name, getattr(self.totals, name) + value)
        log.debug(
            "batch committed",
            extra={"topic": self.topic, "offsets": {f"{t}[{p}]": o for (t, p), o in next_offsets.items()}, **vars(result)},
        )
        return result, next_offsets

    def _prepare(self, msg: Message, offset: int) -> Item[Any] | DeadLetter:
        value = msg.value()
        while True:
            try:
                if value is None:
                    raise ValueError("record has no value (tombstone): nothing to store")
                record = self.decode(value, self.context(msg.topic(), msg.partition(), offset))
                rows = self.sink.prepare(record)
                return Item(msg.topic(), msg.partition(), offset, _timestamp(msg), msg.key(), value, rows)
            except Exception as exc:
                decision = self.policy(exc)
                if decision.action is Action.DEAD_LETTER and decision.error_class is not None:
                    return DeadLetter(
                        decision.error_class, describe(exc), msg.topic(), msg.partition(), offset,
                        _timestamp(msg), msg.key(), value,
                    )
                if decision.action is Action.RETRY:  # e.g. a schema registry that is away
                    self._on_retry(exc, 1, self.backoff.initial)
                    if self.stop.wait(self.backoff.initial):
                        raise Stopped("stopped while decoding") from exc
                    continue
                raise ConsumerError(
                    f"{self.sink.name}: unexpected {describe(exc)} at {msg.topic()}[{msg.partition()}]@{offset}"
                ) from exc

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            # prepare_threshold=None: no server-side prepared statements, which a
            # transaction-pooling PgBouncer cannot route; autocommit + explicit
            # transaction blocks keep every transaction short and visible here.
            self._conn = psycopg.connect(
                self.settings.pg.conninfo(),
                autocommit=True,
                prepare_threshold=None,
                connect_timeout=10,
                application_name=f"insights-consume-{self.sink.name}",
            )
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _commit(
        self,
        items: list[Item[Any]],
        letters: list[DeadLetter],
        next_offsets: Mapping[tuple[str, int], int],
        stamps: Mapping[str, Iterable[datetime]],
    ) -> BatchResult:
        try:
            conn = self._connection()
            self._ensure_partitions(conn, stamps)
            with conn.transaction():
                stored = offsets.load(conn, self.group, next_offsets, lock=True)

                def fresh(topic: str, partition: int, offset: int) -> bool:
                    return offset >= stored.get((topic, partition), -1)

                todo = [i for i in items if fresh(i.topic, i.partition, i.offset)]
                todo_letters = [d for d in letters if fresh(d.topic, d.partition, d.offset)]
                fresh_letters = len(todo_letters)
                outcome = write_isolating(conn, self.sink, todo, self.policy)
                for item, exc, error_class in outcome.rejected:
                    todo_letters.append(
                        DeadLetter(error_class, describe(exc), item.topic, item.partition, item.offset,
                                   item.timestamp_ms, item.key, item.value)
                    )
                offsets.save(conn, self.group, next_offsets)
                if todo_letters:
                    # delivered before the commit: a crash here re-delivers, never loses
                    for letter in todo_letters:
                        self._dlq.send(letter)
                    self._dlq.flush()
        except Exception as exc:
            if self.policy(exc).action is Action.RETRY:
                self._drop_connection()
            raise
        for table, count in outcome.rows.items():
            self.metrics.rows.labels(table).inc(count)
        for letter in todo_letters:
            self.metrics.dlq.labels(letter.topic, letter.error_class.value).inc()
            log.warning(
                "dead-lettered",
                extra={"topic": letter.topic, "partition": letter.partition, "offset": letter.offset,
                       "error_class": letter.error_class.value, "reason": letter.reason[:300]},
            )
        skipped = (len(items) - len(todo)) + (len(letters) - fresh_letters)
        return BatchResult(
            consumed=len(items) + len(letters),
            stored=len(todo) - len(outcome.rejected),
            skipped=skipped,
            dead_letters=len(todo_letters),
        )

    def _ensure_partitions(self, conn: psycopg.Connection, stamps: Mapping[str, Iterable[datetime]]) -> None:
        """Create missing time partitions in a short transaction of their own.

        Only one timestamp per (table, day) is passed on, and days already ensured by
        this process are skipped: a steady stream costs no query at all.
        """
        wanted: dict[str, list[datetime]] = {}
        for table, values in stamps.items():
            for ts in values:
                key = (table, ts.date())
                if key not in self._ensured:
                    self._ensured.add(key)
                    wanted.setdefault(table, []).append(ts)
        if not wanted:
            return
        try:
            for table, values in wanted.items():
                ensure_partitions_for(conn, table, values)  # commits its own short transaction
        except Exception:
            # not ensured after all: ask again on the retry
            for table, values in wanted.items():
                self._ensured.difference_update((table, ts.date()) for ts in values)
            raise

    def _commit_kafka(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        owned = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items() if (t, p) in self._assigned]
        if not owned:
            return
        try:
            consumer.commit(offsets=owned, asynchronous=True)
        except KafkaException as exc:  # only lag reporting suffers; PostgreSQL has the truth
            log.info("kafka offset commit skipped", extra={"topic": self.topic, "error": str(exc)})
        for tp in owned:
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    # --- callbacks -------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._finish_inflight_quietly()  # the connection is the writer's until then
        self.metrics.rebalances.labels("assign").inc()
        keys = [(tp.topic, tp.partition) for tp in partitions]

        def load() -> dict[tuple[str, int], int]:
            try:
                with self._connection().transaction():
                    return offsets.load(self._conn, self.group, keys)  # type: ignore[arg-type]
            except Exception as exc:
                if self.policy(exc).action is Action.RETRY:
                    self._drop_connection()
                raise

        try:
            stored = retry_transient(load, backoff=self.backoff, stop=self.stop, on_retry=self._on_retry) if keys else {}
        except Stopped:
            stored = {}
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_INVALID)
        consumer.incremental_assign(partitions)
        self._assigned.update(keys)
        log.info(
            "partitions assigned",
            extra={"topic": self.topic, "partitions": sorted(p for _, p in keys),
                   "from_postgres": {str(p): o for (_, p), o in sorted(stored.items())}},
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions, "revoke")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions, "lost")

    def _forget(self, partitions: list[TopicPartition], kind: str) -> None:
        # Callbacks run inside consume() on the main thread: finishing the batch on the
        # writer thread first means the partitions leave with everything committed.
        self._finish_inflight_quietly()
        self.metrics.rebalances.labels(kind).inc()
        for tp in partitions:
            self._assigned.discard((tp.topic, tp.partition))
            try:
                self.metrics.lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        log.info("partitions %s", "revoked" if kind == "revoke" else "lost",
                 extra={"topic": self.topic, "partitions": sorted(tp.partition for tp in partitions)})

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.debug("kafka offset commit failed", extra={"topic": self.topic, "error": str(err)})

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal kafka error", extra={"error": str(err)})
            self.stop.set()
        else:
            log.warning("kafka error (librdkafka retries)", extra={"error": str(err)})

    def _on_message_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise ConsumerError(f"fatal Kafka error: {err}")
        if err.code() == KafkaError._PARTITION_EOF:
            return
        log.warning("kafka error while fetching (retried by librdkafka)", extra={"topic": self.topic, "error": str(err)})

    def _on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        cause = "postgres" if isinstance(exc, psycopg.Error) else "kafka" if isinstance(exc, KafkaException) else "other"
        self.metrics.retries.labels(cause).inc()
        log.warning(
            "transient failure, retrying the batch",
            extra={"topic": self.topic, "attempt": attempt, "delay_s": round(delay, 3), "error": describe(exc)[:300]},
        )


def _timestamp(msg: Message) -> int | None:
    kind, value = msg.timestamp()
    return value if kind else None
