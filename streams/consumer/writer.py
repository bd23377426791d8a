"""The batch writer: PostgreSQL's side of the loop, on a thread of its own.

Batch N is written on the writer thread while the consumer's thread consumes and
decodes batch N+1 (``pipeline=True``, the default), so PostgreSQL's share of the work
overlaps Python's. The rules that keep this exactly as safe as writing in place:

* at most one batch is in flight: :meth:`BatchWriter.submit` waits for the previous one
  before it hands over the next, so batches commit strictly in order;
* the loop drains the writer (:meth:`BatchWriter.finish`) before a rebalance callback
  reads or gives up offsets, and before it leaves; the connection is then never shared;
* the writer never touches the Kafka consumer: a finished batch comes back as
  :class:`Written` and the loop commits its offsets to Kafka on its own thread.

Per batch the writer creates the time partitions its rows need (a short transaction of
their own), then runs :func:`streams.consumer.transaction.commit_batch`. Transient
failures (PostgreSQL restarting, the broker away, serialization conflicts) retry both
with capped exponential backoff, forever, never skipping, until the stop event is set.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import psycopg
from confluent_kafka import KafkaException

from core.settings import PostgresSettings
from streams.consumer.policy import Action, ErrorPolicy
from streams.consumer.sink import Sink
from streams.consumer.transaction import (
    Batch,
    BatchResult,
    Committed,
    OffsetsWentBack,
    TopicPartition,
    commit_batch,
    stored_offsets,
    went_back,
)
from streams.dlq import DeadLetterQueue
from streams.faults import describe
from streams.metrics import ConsumerMetrics
from streams.pg import connect
from streams.pg.partitions import PartitionsOnDemand
from streams.retry import Backoff, retry_transient
from streams.serde.errors import RegistryUnavailableError
from streams.service.health import Health

log = logging.getLogger("insights.consumer")


class Written(NamedTuple):
    """A batch committed to PostgreSQL; its offsets still to be committed to Kafka."""

    result: BatchResult
    next_offsets: Mapping[TopicPartition, int]


class BatchWriter:
    def __init__(
        self,
        pg: PostgresSettings,
        sink: Sink[Any],
        group: str,
        dead_letters: DeadLetterQueue,
        *,
        policy: ErrorPolicy,
        backoff: Backoff,
        stop: threading.Event,
        metrics: ConsumerMetrics,
        health: Health,
        label: str,
        pipeline: bool = True,
    ) -> None:
        self.pg = pg
        self.sink = sink
        self.group = group
        self.dead_letters = dead_letters
        self.policy = policy
        self.backoff = backoff
        self.stop = stop
        self.metrics = metrics
        self.health = health
        self.label = label  # the topics, for log lines
        self.pipeline = pipeline
        self.totals = BatchResult()
        #: perf_counter of the last commit (the benchmark's end of the clock)
        self.last_commit_at: float | None = None
        self._partitions = PartitionsOnDemand()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._inflight: Future[Written] | None = None
        #: next offsets this process knows PostgreSQL holds: loaded on assignment or stored by
        #: its own commits. Written by the writer thread, read and reset by the consumer's
        #: thread only while no batch is in flight.
        self.known: dict[TopicPartition, int] = {}

    # --- the consumer's thread ---------------------------------------------------------
    def submit(self, batch: Batch) -> Written | None:
        """Hand ``batch`` over; return the batch that finished meanwhile, if any.

        Pipelined, that is the *previous* batch (waited for here, its failure raised
        here); otherwise ``batch`` itself, written in place.
        """
        if not self.pipeline:
            return self._write(batch)
        previous = self.finish()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.sink.name}-writer")
        self._inflight = self._thread.submit(self._write, batch)
        return previous

    def finish(self) -> Written | None:
        """Wait for the batch in flight, if any; its failure is raised here."""
        inflight, self._inflight = self._inflight, None
        return None if inflight is None else inflight.result()

    def finished(self) -> bool:
        """True when a batch was in flight and is done (committed, or failed)."""
        return self._inflight is not None and self._inflight.done()

    def stored_offsets(self, keys: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offsets PostgreSQL holds for ``keys`` (call :meth:`finish` first)."""
        assert self._inflight is None, "the connection is the writer thread's while a batch is in flight"

        def load() -> dict[TopicPartition, int]:
            with self._guarded() as conn, conn.transaction():
                return stored_offsets(conn, self.group, keys)

        return retry_transient(load, backoff=self.backoff, stop=self.stop, on_retry=self.on_retry)

    def remember(self, offsets: Mapping[TopicPartition, int]) -> None:
        """What PostgreSQL holds now for these partitions (assignment, rewind)."""
        self.known.update(offsets)

    def forget(self, keys: list[TopicPartition]) -> None:
        for key in keys:
            self.known.pop(key, None)

    def went_back_while_idle(self, keys: list[TopicPartition]) -> OffsetsWentBack | None:
        """One look, no retry: do PostgreSQL's offsets trail what this process stored?

        For a quiet consumer, which would otherwise notice a failover's lost commits only
        with its next record. A database still away is not an error here: None.
        """
        assert self._inflight is None, "the connection is the writer thread's while a batch is in flight"
        keys = [k for k in keys if k in self.known]
        if not keys:
            return None
        try:
            with self._guarded() as conn, conn.transaction():
                stored = stored_offsets(conn, self.group, keys)
        except Exception as exc:
            if self.policy(exc).action is not Action.RETRY:
                raise
            return None
        behind = went_back(stored, self.known, keys)
        return OffsetsWentBack(behind) if behind else None

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- the writer's thread (or the consumer's, without the pipeline) -----------------
    def _write(self, batch: Batch) -> Written:
        def attempt() -> Committed:
            with self._guarded() as conn:
                self._partitions.ensure(conn, batch.stamps)
                return commit_batch(
                    conn, batch, sink=self.sink, group=self.group, policy=self.policy, dead_letters=self.dead_letters,
                    known=self.known,
                )

        committed = retry_transient(attempt, backoff=self.backoff, stop=self.stop, on_retry=self.on_retry)
        for key, value in batch.next_offsets.items():
            self.known[key] = max(self.known.get(key, value), value)
        self.last_commit_at = time.perf_counter()
        self.metrics.batch_seconds.observe(self.last_commit_at - batch.started)
        self.metrics.record_batch(committed.writes, committed.result)
        if committed.letters:
            self.health.ok("kafka")  # the dead letters were acknowledged
        for letter in committed.letters:
            self.metrics.dlq.labels(letter.topic, letter.error_class.value).inc()
            log.warning(
                "dead-lettered",
                extra={"topic": letter.topic, "partition": letter.partition, "offset": letter.offset,
                       "error_class": letter.error_class.value, "reason": letter.reason[:300]},
            )
        self.totals.add(committed.result)
        # per batch, what PostgreSQL did: events stored / already stored / dead-lettered,
        # rows inserted / updated (per table in the fields)
        log.info(
            "batch committed",
            extra={"topic": self.label, **vars(committed.result),
                   "inserted_rows": dict(committed.writes.inserted), "updated_rows": dict(committed.writes.updated),
                   "offsets": {f"{t}[{p}]": o for (t, p), o in batch.next_offsets.items()}},
        )
        return Written(committed.result, batch.next_offsets)

    @contextmanager
    def _guarded(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection for one attempt: reported reachable when the attempt succeeds,
        dropped when it fails transiently (the next attempt reconnects)."""
        try:
            yield self._connection()
        except Exception as exc:
            if self.policy(exc).action is Action.RETRY:
                self._drop_connection()
            raise
        self.health.ok("postgres")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            # autocommit + explicit transaction blocks keep every transaction short and
            # visible here; connect() turns off server-side prepared statements, which a
            # transaction-pooling PgBouncer cannot route
            self._conn = connect(self.pg, f"consume-{self.sink.name}")
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        """A transient failure: count it and tell the health which dependency failed.

        The health logs the start and the end of the outage, once each; every attempt in
        between is only counted (``insights_consumer_transient_retries``) and logged at
        debug level, so a database away for an hour is two lines, not thousands.
        """
        cause = dependency_of(exc)
        self.metrics.retries.labels(cause).inc()
        reason = describe(exc)[:300]
        self.health.failing(cause, reason)
        log.debug(
            "transient failure, retrying the batch",
            extra={"topic": self.label, "attempt": attempt, "delay_s": round(delay, 3), "error": reason},
        )


def dependency_of(exc: BaseException) -> str:
    """Which dependency a transient failure is about, for the health and the retry metric."""
    if isinstance(exc, psycopg.Error):
        return "postgres"
    if isinstance(exc, KafkaException):
        return "kafka"
    if isinstance(exc, RegistryUnavailableError):
        return "schema registry"
    return "other"
