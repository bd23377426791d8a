"""The consumer loop every sink shares: Kafka batches into PostgreSQL, exactly once in effect.

The write path is three files: this loop (poll, decode, assignment and revocation,
lifecycle), ``writer.py`` (the thread that stores batch N while this loop decodes N+1)
and ``transaction.py`` (the batch transaction, one function). One iteration:

1. ``consume(num_messages=batch_size, timeout=batch_wait)`` a batch (auto-commit off);
2. decode, validate and map each record (pure; a bad record becomes a dead letter);
3. hand the batch to the writer, which stores its rows and offsets in one transaction;
4. once committed, commit the same offsets to Kafka (asynchronously, for lag tools only).

Only this thread touches the Kafka consumer. On assignment the loop seeks to the offsets
stored in PostgreSQL; records of partitions revoked while a batch was fetched are left for
their new owner. Setting ``stop`` (the service runner does, on SIGTERM/SIGINT) finishes
the batch in hand, commits, leaves the group and returns. The loop installs no signal
handler and serves no HTTP: it reports into the ``registry`` and ``health`` it is given.

**Offsets that went back.** When the writer finds PostgreSQL's offsets below what this
process stored (a failover to a replica that missed the last commits, a point-in-time
restore; checked with every batch, and every ``IDLE_OFFSET_CHECK_S`` while idle), the loop
drops everything it fetched and seeks every assigned partition to the offsets PostgreSQL
holds: the lost transactions' records are read from Kafka again and stored once
(docs/runbooks.md#primary-lost).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from core.errors import InsightsError
from core.settings import ConsumerSettings, KafkaSettings, PostgresSettings
from streams.consumer.admit import admit
from streams.consumer.idle import IdleClock, describe_lag, lagging
from streams.consumer.policy import Action, ErrorPolicy, default_policy, describe
from streams.consumer.sink import Item, Sink, Source
from streams.consumer.transaction import Batch, BatchResult, OffsetsWentBack
from streams.consumer.writer import BatchWriter, Written
from streams.dlq import DeadLetter, DeadLetterQueue
from streams.faults import is_transient
from streams.kafka import consumer_config
from streams.metrics import ConsumerMetrics
from streams.retry import Backoff, Stopped
from streams.service.health import Health

log = logging.getLogger("insights.consumer")

#: while Kafka is reported failing and no record arrives, ask the broker this often
KAFKA_PROBE_S = 5.0

#: how often an idle consumer checks that PostgreSQL still holds the offsets it stored
IDLE_OFFSET_CHECK_S = 5.0

#: how long one look for the topics waits for the broker (then the loop backs off and asks again)
TOPIC_CHECK_S = 5.0

#: error callback codes that are a refusal, not an outage
_KAFKA_REFUSED = {
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
}


class ConsumerError(InsightsError):
    """The consumer cannot run (missing topic, fatal broker error, a bug in a sink)."""


class ConsumerLoop:
    def __init__(
        self,
        sink: Sink[Any],
        source: Source,
        *,
        kafka: KafkaSettings,
        pg: PostgresSettings,
        batching: ConsumerSettings,
        group: str | None = None,
        stop: threading.Event | None = None,
        registry: CollectorRegistry | None = None,
        health: Health | None = None,
        policy: ErrorPolicy = default_policy,
        backoff: Backoff = Backoff(initial=0.2, cap=5.0),
        auto_offset_reset: str = "earliest",
        max_batches: int | None = None,
        idle_exit_after: float | None = None,
        pipeline: bool = True,
    ) -> None:
        self.sink, self.source, self.kafka, self.batching = sink, source, kafka, batching
        self.topics = list(source.topics)
        self.label = ",".join(self.topics)  # for log lines
        self.group = group or batching.group
        self.policy, self.backoff, self.auto_offset_reset = policy, backoff, auto_offset_reset
        self.stop = stop if stop is not None else threading.Event()
        self.health = health if health is not None else Health()
        self.metrics = ConsumerMetrics(sink.name, self.group, registry=registry)
        #: for tests and the benchmark: stop after this many batches / this long idle
        #: (idle: streams/consumer/idle.py, partitions assigned and none of them lagging)
        self.max_batches, self.idle_exit_after = max_batches, idle_exit_after
        self._idle = IdleClock(idle_exit_after) if idle_exit_after is not None else None
        #: perf_counter of the first batch (the benchmark's start of the clock)
        self.first_batch_at: float | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._consumer: Consumer | None = None
        self._last_probe = 0.0
        #: offsets found gone back, to rewind to before the next fetch (see the module doc)
        self._pending_gap: OffsetsWentBack | None = None
        #: serving errors queued before the broker answered (they end, not start, an outage)
        self._draining_errors = False
        self._next_idle_check = 0.0
        self.writer = BatchWriter(
            pg, sink, self.group, DeadLetterQueue(kafka, self.group),
            policy=policy, backoff=backoff, stop=self.stop, metrics=self.metrics, health=self.health,
            label=self.label, pipeline=pipeline,
        )

    @property
    def totals(self) -> BatchResult:
        return self.writer.totals

    # --- lifecycle -------------------------------------------------------------------
    def request_stop(self, *_args: object) -> None:
        self.stop.set()

    def client_config(self) -> dict[str, Any]:
        """What the loop's Kafka consumer is made with (librdkafka properties)."""
        # consumer_config carries the leader-change settings (streams/kafka/clients.py,
        # CONSUMER_LEADER_CHANGES): a broker's loss pauses fetching from the partitions it
        # led and the session outlasts a coordinator's move; offsets live in PostgreSQL, so
        # nothing here depends on which broker leads. ``batching`` sizes the fetches
        # (batch_fetch): the broker fills them instead of answering every few records.
        return consumer_config(self.kafka, self.group, batching=self.batching, **{
            "client.id": f"insights-{self.sink.name}", "auto.offset.reset": self.auto_offset_reset,
            "on_commit": self._on_commit, "error_cb": self._on_kafka_error,
        })

    def run(self) -> BatchResult:
        """Consume until stopped; return the totals. Raises ConsumerError on a fatal fault."""
        consumer = Consumer(self.client_config())
        self._consumer = consumer
        try:
            if not self._require_topics(consumer):
                return self.totals  # stopped while waiting for the broker (the finally block logs it)
            if self.source.before_consuming is not None:
                self.source.before_consuming()
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
            log.info("consuming", extra={"topic": self.label, "group": self.group, "sink": self.sink.name})
            try:
                self._consume(consumer)
            except Stopped:  # stopped while a batch was being retried
                self._log_abandoned()
            finally:
                self._finish_inflight_quietly()
        except Exception as exc:
            self.health.fatal(describe(exc))
            raise
        finally:
            log.info("leaving the group", extra={"topic": self.label, "group": self.group, **vars(self.totals)})
            consumer.close()  # leaves the group: partitions move to the others at once
            self._consumer = None
            self.writer.close()
        return self.totals

    def _log_abandoned(self) -> None:
        log.warning("stopped while retrying: batch abandoned, it will be redelivered", extra={"topic": self.label})

    def _consume(self, consumer: Consumer) -> None:
        batches = 0
        if self._idle is not None:
            self._idle.saw_records()  # the clock starts with the subscription, not at construction
        batch_size = self.batching.batch_size
        wait = self.batching.batch_wait_ms / 1000.0
        while not self.stop.is_set():
            messages = consumer.consume(num_messages=batch_size, timeout=max(wait, 0.001))
            self.health.beat()
            self._raise_permanent()
            if self.writer.finished():  # a failed write surfaces now, not at the next batch
                self._settle(self.writer.finish)
            if self._rewind_if_behind():
                continue  # what this consume() returned was fetched before the seek: it comes again
            if not messages:
                self._probe_kafka(consumer)
                if self._idle is not None and self._idle.should_look() and self._nothing_left(consumer):
                    return
                self._check_offsets_while_idle()
                continue
            if self._idle is not None:
                self._idle.saw_records()
            self.process(messages)
            self._rewind_if_behind()
            self.health.beat()
            batches += 1
            if self.max_batches is not None and batches >= self.max_batches:
                return

    def _nothing_left(self, consumer: Consumer) -> bool:
        """Quiet for the idle period: may this process exit? (the rule: streams/consumer/idle.py)"""
        self._settle(self.writer.finish)  # the batch in flight stores its offsets before they are compared
        if self._pending_gap is not None:
            return False  # offsets went back: there is reading to do again
        positions: dict[tuple[str, int], int]
        if self._assigned:
            keys = sorted(self._assigned)
            positions = {k: self.writer.known[k] for k in keys if k in self.writer.known}
            try:
                fetched = consumer.position([TopicPartition(t, p) for t, p in keys])
            except KafkaException:
                return False
            for tp in fetched:
                if tp.offset >= 0:  # OFFSET_INVALID until something was fetched
                    key = (tp.topic, tp.partition)
                    positions[key] = max(positions.get(key, tp.offset), tp.offset)
        else:
            # nothing assigned: done only when the group has nothing left anywhere, so that
            # a partition a member still holds (or is about to hand over) is never orphaned
            try:
                keys = sorted(
                    (t, p) for t in self.topics
                    for p in consumer.list_topics(t, timeout=TOPIC_CHECK_S).topics[t].partitions
                )
                committed = consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=TOPIC_CHECK_S)
            except (KafkaException, KeyError):
                return False
            positions = {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}
            positions.update(self.writer.stored_offsets(keys))  # PostgreSQL's offsets are the truth
        try:
            marks = {
                (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=TOPIC_CHECK_S, cached=False)
                for t, p in keys
            }
        except KafkaException:
            return False  # the broker did not answer: not known to be done
        left = lagging(marks, positions, from_end=self.auto_offset_reset in ("latest", "largest", "end"))
        whose = "assigned partitions" if self._assigned else "group (no partition assigned here)"
        if left:
            log.info(
                "idle, but records wait: not done", extra={"topic": self.label, "of": whose,
                                                            "records": sum(left.values()), "lagging": describe_lag(left)},
            )
            return False
        log.info("idle and nothing left to read: exiting", extra={"topic": self.label, "of": whose})
        return True

    def _raise_permanent(self) -> None:
        """A probe found a fault no retry fixes (wrong password, no such database): stop with it."""
        if self.health.permanent is not None:
            raise self.health.permanent

    def _require_topics(self, consumer: Consumer) -> bool:
        """Check that the topics exist; False when stopped before the broker answered.

        A broker that does not answer is waited for, not an error: a consumer started
        before its broker (systemd, compose, a host reboot) must come up by itself. The
        wait is logged once when it starts and once when it ends (through the health);
        a missing topic or a refused credential is raised at once.
        """
        delays = self.backoff.delays()
        while True:
            self._raise_permanent()
            consumer.poll(0)  # serve librdkafka's error callbacks while they belong to this outage
            try:
                found = {t: consumer.list_topics(t, timeout=TOPIC_CHECK_S).topics.get(t) for t in self.topics}
                break
            except KafkaException as exc:
                if not is_transient(exc):
                    raise
                self.health.failing("kafka", describe(exc)[:300])
                self.health.beat()  # waiting for the broker is the loop's work now, not a hang
                if self.stop.wait(next(delays)):
                    return False
        # errors librdkafka queued before the broker answered are the outage that just ended
        self._draining_errors = True
        try:
            consumer.poll(0)
        finally:
            self._draining_errors = False
        self.health.ok("kafka")
        missing = [t for t, meta in found.items() if meta is None or meta.error is not None]
        if missing:
            what = f"topic {missing[0]} does not exist" if len(missing) == 1 else f"topics {', '.join(missing)} do not exist"
            raise ConsumerError(f"{what}: {self.source.missing_hint}")
        return True

    def _probe_kafka(self, consumer: Consumer) -> None:
        """Idle, with Kafka reported failing: no record will say it is back, so ask it."""
        if not self.health.is_failing("kafka") or time.monotonic() - self._last_probe < KAFKA_PROBE_S:
            return
        self._last_probe = time.monotonic()
        try:
            consumer.list_topics(self.topics[0], timeout=2)
        except KafkaException as exc:
            self.health.failing("kafka", str(exc))
        else:
            self.health.ok("kafka")

    # --- one batch -------------------------------------------------------------------
    def process(self, messages: list[Message]) -> BatchResult:
        """Decode one batch here, then hand it to the writer; return what the writer finished
        meanwhile (pipelined: the *previous* batch, empty for the first; else this one)."""
        started = time.perf_counter()
        if self.first_batch_at is None:
            self.first_batch_at = started
        items: list[Item[Any]] = []
        letters: list[DeadLetter] = []
        next_offsets: dict[tuple[str, int], int] = {}
        per_topic: Counter[str] = Counter()
        fetched = False
        for msg in messages:
            per_topic[msg.topic() or self.label] += 1
            err = msg.error()
            if err is not None:
                self._on_message_error(err)
                continue
            fetched = True
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
        for topic, count in per_topic.items():
            self.metrics.messages.labels(topic).inc(count)
        if fetched:
            self.health.ok("kafka")
        if not next_offsets:
            return BatchResult()
        stamps = self.sink.timestamps([item.rows for item in items]) if items else {}
        batch = Batch(items, letters, next_offsets, stamps, started)
        # when the previous batch finds the offsets gone back, this one is not submitted
        return self._settle(lambda: self.writer.submit(batch))

    def _settle(self, call: Callable[[], Written | None]) -> BatchResult:
        """Run a writer call; offsets found gone back become a rewind before the next fetch."""
        try:
            return self._committed(call())
        except OffsetsWentBack as gap:
            self._pending_gap = gap
            return BatchResult()

    def _check_offsets_while_idle(self) -> None:
        if time.monotonic() < self._next_idle_check or self._consumer is None:
            return
        self._next_idle_check = time.monotonic() + IDLE_OFFSET_CHECK_S
        self._settle(self.writer.finish)  # nothing may be in flight while it looks
        if self._pending_gap is None:
            self._pending_gap = self.writer.went_back_while_idle(sorted(self._assigned))
        self._rewind_if_behind()

    def _rewind_if_behind(self) -> bool:
        """Seek every assigned partition to the offsets PostgreSQL holds; True if it did.

        Every partition, not only those behind: the batch dropped with the rewind (and
        anything fetched meanwhile) may hold records of any of them.
        """
        gap, self._pending_gap = self._pending_gap, None
        consumer = self._consumer
        if gap is None or consumer is None:
            return False
        log.warning(
            "offsets in PostgreSQL are behind what this process stored (a failover to a replica that "
            "missed commits, or a restore): re-reading from the stored offsets",
            extra={"topic": self.label, "behind": {f"{t}[{p}]": v for (t, p), v in gap.behind.items()}},
        )
        self.metrics.rebalances.labels("rewind").inc()
        keys = sorted(self._assigned)
        stored = self.writer.stored_offsets(keys) if keys else {}
        # a partition PostgreSQL forgot entirely starts over as a new group would
        fallback = OFFSET_BEGINNING if self.auto_offset_reset == "earliest" else OFFSET_END
        for topic, partition in keys:
            tp = TopicPartition(topic, partition, stored.get((topic, partition), fallback))
            try:
                consumer.seek(tp)  # also drops what librdkafka had fetched for it
            except KafkaException:  # not fetching yet: assign it again at the offset
                consumer.incremental_unassign([TopicPartition(topic, partition)])
                consumer.incremental_assign([tp])
        self.writer.forget(keys)
        self.writer.remember(stored)
        return True

    def _committed(self, written: Written | None) -> BatchResult:
        """A batch the writer committed: its offsets go to Kafka, from this thread."""
        if written is None:
            return BatchResult()
        self._commit_kafka(written.next_offsets)
        return written.result

    def _finish_inflight_quietly(self) -> None:
        try:
            self._settle(self.writer.finish)  # gone back: rewound once consume() returns
        except Stopped:
            self._log_abandoned()

    def _prepare(self, msg: Message, offset: int) -> Item[Any] | DeadLetter:
        value = msg.value()
        while True:
            try:
                rows = admit(
                    value, self.source.decoder, self.sink.prepare,
                    self.source.context(msg.topic(), msg.partition(), offset), self.batching,
                )
                self.health.ok("schema registry")  # it answered, if it was asked (a no-op otherwise)
                return Item(msg.topic(), msg.partition(), offset, _timestamp(msg), msg.key(), value, rows)
            except Exception as exc:
                decision = self.policy(exc)
                if decision.action is Action.DEAD_LETTER and decision.error_class is not None:
                    return DeadLetter(
                        decision.error_class, describe(exc), msg.topic(), msg.partition(), offset,
                        _timestamp(msg), msg.key(), value,
                    )
                if decision.action is Action.RETRY:  # e.g. a schema registry that is away
                    self.writer.on_retry(exc, 1, self.backoff.initial)
                    if self.stop.wait(self.backoff.initial):
                        raise Stopped("stopped while decoding") from exc
                    continue
                raise ConsumerError(
                    f"{self.sink.name}: unexpected {describe(exc)} at {msg.topic()}[{msg.partition()}]@{offset}"
                ) from exc

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
            log.info("kafka offset commit skipped", extra={"topic": self.label, "error": str(exc)})
        self.metrics.record_lag(consumer, owned)

    # --- callbacks (all run inside consume(), on this thread) --------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._finish_inflight_quietly()  # the connection is the writer's until then
        self.metrics.rebalances.labels("assign").inc()
        self.health.ok("kafka")
        keys = [(tp.topic, tp.partition) for tp in partitions]
        try:
            stored = self.writer.stored_offsets(keys) if keys else {}
        except Stopped:
            stored = {}
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_INVALID)
        self.writer.remember(stored)
        consumer.incremental_assign(partitions)
        self._assigned.update(keys)
        if self._idle is not None:
            self._idle.assignment_changed()  # new partitions: their records have yet to come
        log.info(
            "partitions assigned",
            extra={"topic": self.label, "partitions": sorted(p for _, p in keys),
                   "from_postgres": {str(p): o for (_, p), o in sorted(stored.items())}},
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions, "revoke")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions, "lost")

    def _forget(self, partitions: list[TopicPartition], kind: str) -> None:
        self._finish_inflight_quietly()  # the partitions leave with everything committed
        self.metrics.rebalances.labels(kind).inc()
        self._assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
        if self._idle is not None:
            self._idle.assignment_changed()  # a rebalance is under way: more may be assigned
        self.writer.forget([(tp.topic, tp.partition) for tp in partitions])  # the next owner stores them
        self.metrics.forget_lag(partitions)
        log.info("partitions %s", "revoked" if kind == "revoke" else "lost",
                 extra={"topic": self.label, "partitions": sorted(tp.partition for tp in partitions)})

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is None:
            self.health.ok("kafka")
        elif err.code() != KafkaError._NO_OFFSET:
            log.debug("kafka offset commit failed", extra={"topic": self.label, "error": str(err)})

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal kafka error", extra={"error": str(err)})
            self.health.fatal(f"kafka: {err}")
            self.stop.set()
        elif err.code() in _KAFKA_REFUSED:  # credentials or ACLs: no retry will change them
            self.health.found_permanent(KafkaException(err), f"kafka: {err.str()}")
        else:
            # the health logs the outage once; librdkafka retries by itself and says so in
            # its own (suppressed, repeated) log lines
            if not self._draining_errors:
                self.health.failing("kafka", str(err))
            log.debug("kafka error (librdkafka retries)", extra={"error": str(err)})

    def _on_message_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise ConsumerError(f"fatal Kafka error: {err}")
        if err.code() == KafkaError._PARTITION_EOF:
            return
        self.health.failing("kafka", str(err))
        log.warning("kafka error while fetching (retried by librdkafka)", extra={"topic": self.label, "error": str(err)})


def _timestamp(msg: Message) -> int | None:
    kind, value = msg.timestamp()
    return value if kind else None
