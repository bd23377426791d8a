"""The dead-letter workflow: look at a DLQ, re-drive what a fix made storable, drop the rest.

``insights dlq list | show | replay | purge`` (docs/replay.md#poison-storm). The pieces:

* **Reading.** :func:`read_dlq` reads ``<topic>.dlq`` from its log start (or from
  ``since``, through offsets-for-times) up to the end as of the call, with filters on the
  error class, the reason and positions. Nothing is committed by reading.
* **Replaying.** :func:`replay_dead_letters` re-publishes the matching pending records to
  their topic with the original key and value (the live consumer stores them through the
  idempotent path) and records each one in ``dlq_replays`` with where it went. The
  replayer group's committed offset (``streams.replay.replayer_group``, what ``insights
  status`` measures depth from) moves over the prefix of each partition whose every record
  was handled; a filter that leaves records behind stops it there, and the per-record
  ledger keeps them from being sent twice. Classes that cannot succeed by being sent again
  (``corrupt_payload``, ``unknown_schema`` until the schema is registered) are skipped
  unless named with ``--class``.
* **Failing again.** A re-published record that fails again is dead-lettered again by the
  consumer, with its new reason and its new position as origin: :func:`summarize` matches
  that origin against ``dlq_replays`` and counts it as *failed again*.
* **Purging.** :func:`purge_before` moves the log start of each partition to an offset or
  to a time (Kafka DeleteRecords); what it drops is counted first, for the confirmation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from core.errors import InsightsError
from core.settings import Settings
from streams.dlq import H_ERROR_CLASS, H_OFFSET, H_PARTITION, H_REASON, H_TOPIC
from streams.faults import ErrorClass
from streams.kafka import admin_client, consumer_config, producer_config
from streams.pg import connect
from streams.replay import _replay_headers, replayer_group
from streams.topics import dlq_name

TIMEOUT_S = 30.0
CHUNK = 1000

#: classes a second delivery cannot fix by itself: replayed only when named
SKIPPED_UNLESS_NAMED = frozenset({ErrorClass.CORRUPT.value, ErrorClass.UNKNOWN_SCHEMA.value})

Key = tuple[int, int]  # (partition, offset) in the DLQ


class DlqError(InsightsError):
    """A dead-letter topic cannot be read, replayed or purged as asked."""


@dataclass(frozen=True)
class DeadRecord:
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def header(self, name: str) -> str:
        return (self.headers.get(name) or b"").decode("utf-8", "replace")

    @property
    def error_class(self) -> str:
        return self.header(H_ERROR_CLASS) or "?"

    @property
    def reason(self) -> str:
        return self.header(H_REASON)

    @property
    def origin(self) -> tuple[str, int, int] | None:
        """Where the record lived before it was dead-lettered (topic, partition, offset)."""
        try:
            return self.header(H_TOPIC), int(self.header(H_PARTITION)), int(self.header(H_OFFSET))
        except ValueError:
            return None

    @property
    def when(self) -> datetime | None:
        return None if self.timestamp_ms is None else datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


def reason_kind(reason: str) -> str:
    """The reason without what differs from record to record (key values, numbers), for counting."""
    first = reason.strip().splitlines()[0] if reason.strip() else "(no reason)"
    first = re.sub(r"\(([^()]*)\)=\(([^()]*)\)", r"(\1)=(…)", first)  # PostgreSQL's Key (col)=(value)
    first = re.sub(r"(?<![\[\w.])\d+(?![\]\w])", "N", first)  # not SQLSTATEs ([23503]) nor names
    return first[:120]


@dataclass(frozen=True)
class Filters:
    classes: frozenset[str] = frozenset()
    #: a substring of the reason (case-insensitive)
    reason: str | None = None
    since: datetime | None = None
    #: only these records, ``{partition: offset}``
    offsets: Mapping[int, int] = field(default_factory=dict)

    def match(self, record: DeadRecord) -> bool:
        if self.classes and record.error_class not in self.classes:
            return False
        if self.reason and self.reason.lower() not in record.reason.lower():
            return False
        if self.offsets and self.offsets.get(record.partition) != record.offset:
            return False
        return True


# --- the log ----------------------------------------------------------------------------


def _partitions(admin: AdminClient, topic: str) -> int:
    meta = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise DlqError(f"topic {topic} does not exist (create the topics: `insights topics create`)")
    return len(meta.partitions)


def _list(admin: AdminClient, topic: str, count: int, spec: OffsetSpec) -> dict[int, int]:
    futures = admin.list_offsets({TopicPartition(topic, p): spec for p in range(count)}, request_timeout=TIMEOUT_S)
    return {tp.partition: f.result(timeout=TIMEOUT_S).offset for tp, f in futures.items()}


@dataclass(frozen=True)
class LogBounds:
    starts: dict[int, int]
    ends: dict[int, int]
    #: the replayer group's committed offsets (absent: never replayed)
    replayed_to: dict[int, int]

    def first_pending(self, p: int) -> int:
        done = self.replayed_to.get(p)
        if done is None or done > self.ends[p]:
            return self.starts[p]
        return max(self.starts[p], done)


def log_bounds(settings: Settings, admin: AdminClient, dlq: str) -> LogBounds:
    count = _partitions(admin, dlq)
    try:
        starts = _list(admin, dlq, count, OffsetSpec.earliest())
        ends = _list(admin, dlq, count, OffsetSpec.latest())
        consumer = Consumer(consumer_config(settings.kafka, replayer_group(settings.kafka)))
        try:
            committed = consumer.committed([TopicPartition(dlq, p) for p in range(count)], timeout=TIMEOUT_S)
        finally:
            consumer.close()
    except KafkaException as exc:
        raise DlqError(f"cannot read the offsets of {dlq}: {exc.args[0]}") from None
    return LogBounds(starts, ends, {tp.partition: tp.offset for tp in committed if tp.offset >= 0})


def read_dlq(
    settings: Settings, dlq: str, bounds: LogBounds, *, since: datetime | None = None,
    start_at: Mapping[int, int] | None = None,
) -> Iterator[DeadRecord]:
    """Every record of ``dlq`` from ``start_at`` (default: the log start; ``since``: the first
    at or after that time) up to ``bounds.ends``; partition after partition in offset order."""
    starts = dict(start_at) if start_at is not None else dict(bounds.starts)
    if since is not None:
        admin = admin_client(settings.kafka)
        at = _list(admin, dlq, len(bounds.ends), OffsetSpec.for_timestamp(int(since.timestamp() * 1000)))
        starts = {p: max(starts[p], at[p] if at[p] >= 0 else bounds.ends[p]) for p in starts}
    todo = {p: bounds.ends[p] for p in starts if starts[p] < bounds.ends[p]}
    if not todo:
        return
    consumer = Consumer(consumer_config(settings.kafka, replayer_group(settings.kafka), **{"enable.partition.eof": True}))
    try:
        consumer.assign([TopicPartition(dlq, p, starts[p]) for p in todo])
        while todo:
            for msg in consumer.consume(num_messages=CHUNK, timeout=1.0):
                err = msg.error()
                p = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.pop(p, None)
                        continue
                    raise DlqError(f"cannot read {dlq}: {err.str()}")
                if p not in todo:
                    continue
                if msg.offset() >= todo[p]:
                    todo.pop(p)
                    continue
                kind, ts = msg.timestamp()
                yield DeadRecord(p, msg.offset(), ts if kind else None, msg.key(), msg.value(),
                                 {k: v or b"" for k, v in (msg.headers() or [])})
                if msg.offset() + 1 >= todo[p]:
                    todo.pop(p)
    finally:
        consumer.close()


# --- the ledger -----------------------------------------------------------------------------

_LEDGER = 'SELECT partition, "offset" FROM dlq_replays WHERE dlq_topic = %s'
_TARGETS = "SELECT target_partition, target_offset FROM dlq_replays WHERE target_topic = %s"
_RECORD = """
INSERT INTO dlq_replays (dlq_topic, partition, "offset", error_class, target_topic, target_partition, target_offset)
SELECT %(dlq)s, w.p, w.o, w.c, %(target)s, w.tp, w.tof
FROM unnest(%(ps)s::int[], %(os)s::bigint[], %(cs)s::text[], %(tps)s::int[], %(tos)s::bigint[]) AS w(p, o, c, tp, tof)
ON CONFLICT (dlq_topic, partition, "offset") DO UPDATE
SET target_partition = EXCLUDED.target_partition, target_offset = EXCLUDED.target_offset, replayed_at = now()
"""


def _ledger(settings: Settings, dlq: str) -> set[Key]:
    with connect(settings.pg, "dlq") as conn:
        return {(p, o) for p, o in conn.execute(_LEDGER, (dlq,)).fetchall()}


def _targets(settings: Settings, topic: str) -> set[tuple[int, int]]:
    with connect(settings.pg, "dlq") as conn:
        return {(p, o) for p, o in conn.execute(_TARGETS, (topic,)).fetchall()}


# --- list ---------------------------------------------------------------------------------


@dataclass
class Group:
    count: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, when: datetime | None) -> None:
        self.count += 1
        if when is not None:
            self.oldest = when if self.oldest is None else min(self.oldest, when)
            self.newest = when if self.newest is None else max(self.newest, when)


@dataclass
class DlqSummary:
    topic: str
    dlq: str
    #: records in the log now
    in_log: int = 0
    #: in the log, neither replayed nor below the replayer's committed offset
    pending: int = 0
    #: replayed by `insights dlq replay`, ever (dlq_replays)
    replayed: int = 0
    #: dead letters of records that were replayed and failed again
    failed_again: int = 0
    #: records gone from the log: purged, or expired by retention
    purged: int = 0
    by_class: dict[str, Group] = field(default_factory=dict)
    by_reason: dict[tuple[str, str], Group] = field(default_factory=dict)
    everything: Group = field(default_factory=Group)


def summarize(settings: Settings, topic: str) -> DlqSummary:
    """Counts of ``<topic>.dlq`` by class and reason, and what became of them (see the module doc)."""
    dlq = dlq_name(topic)
    admin = admin_client(settings.kafka)
    bounds = log_bounds(settings, admin, dlq)
    ledger = _ledger(settings, dlq)
    again = _targets(settings, topic)
    summary = DlqSummary(topic, dlq, replayed=len(ledger), purged=sum(bounds.starts.values()))
    for record in read_dlq(settings, dlq, bounds):
        summary.in_log += 1
        when = record.when
        summary.everything.add(when)
        summary.by_class.setdefault(record.error_class, Group()).add(when)
        summary.by_reason.setdefault((record.error_class, reason_kind(record.reason)), Group()).add(when)
        if record.offset >= bounds.first_pending(record.partition) and (record.partition, record.offset) not in ledger:
            summary.pending += 1
        origin = record.origin
        if origin is not None and origin[0] == topic and (origin[1], origin[2]) in again:
            summary.failed_again += 1
    return summary


def show(settings: Settings, topic: str, filters: Filters, limit: int) -> list[DeadRecord]:
    dlq = dlq_name(topic)
    bounds = log_bounds(settings, admin_client(settings.kafka), dlq)
    start_at = None
    if filters.offsets:
        start_at = {p: (filters.offsets[p] if p in filters.offsets else bounds.ends[p]) for p in bounds.ends}
    found: list[DeadRecord] = []
    for record in read_dlq(settings, dlq, bounds, since=filters.since, start_at=start_at):
        if filters.match(record):
            found.append(record)
            if len(found) >= limit:
                break
    return found


# --- replay -------------------------------------------------------------------------------


@dataclass
class DlqReplay:
    topic: str
    dlq: str
    dry_run: bool
    #: pending records read (in the log, not replayed before)
    pending: int = 0
    replayed: Counter[str] = field(default_factory=Counter)
    #: pending records the filters (or --limit) left out, by class
    left: Counter[str] = field(default_factory=Counter)
    #: left out because their class needs a fix first (name it with --class to replay it)
    skipped_classes: Counter[str] = field(default_factory=Counter)


def replay_dead_letters(settings: Settings, topic: str, filters: Filters, *, limit: int | None = None,
                        dry_run: bool = False) -> DlqReplay:
    """Re-publish the pending dead letters of ``topic`` that ``filters`` match (see the module doc)."""
    dlq = dlq_name(topic)
    admin = admin_client(settings.kafka)
    _partitions(admin, topic)
    bounds = log_bounds(settings, admin, dlq)
    ledger = _ledger(settings, dlq)
    report = DlqReplay(topic, dlq, dry_run)
    starts = {p: bounds.first_pending(p) for p in bounds.ends}
    #: per partition, the offset after the last record of the handled prefix (None: stopped)
    # records before --since are not looked at: the committed offset cannot pass them
    prefix: dict[int, int | None] = {p: None for p in starts} if filters.since else dict(starts)
    delivered: dict[Key, tuple[int, int]] = {}
    failures: list[str] = []

    def on_delivery(key: Key) -> Callable[[KafkaError | None, Any], None]:
        # one callback per record: a delivery report does not carry the headers back
        def delivered_to(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failures.append(err.str())
            else:
                delivered[key] = (msg.partition(), msg.offset())

        return delivered_to

    producer = Producer(producer_config(settings.kafka, "events"))
    sent: list[DeadRecord] = []
    consumer = Consumer(consumer_config(settings.kafka, replayer_group(settings.kafka)))

    def flush() -> None:
        if dry_run or not sent:
            sent.clear()
            return
        producer.flush(TIMEOUT_S)
        if failures or len(delivered) < len(sent):
            raise DlqError(f"re-publishing to {topic} failed: {failures[0] if failures else 'not acknowledged'}")
        rows = [(r.partition, r.offset, r.error_class, *delivered[(r.partition, r.offset)]) for r in sent]
        with connect(settings.pg, "dlq") as conn:
            conn.execute(_RECORD, {
                "dlq": dlq, "target": topic, "ps": [r[0] for r in rows], "os": [r[1] for r in rows],
                "cs": [r[2] for r in rows], "tps": [r[3] for r in rows], "tos": [r[4] for r in rows],
            })
        moved = [TopicPartition(dlq, p, o) for p, o in prefix.items() if o is not None]
        if moved:
            consumer.commit(offsets=moved, asynchronous=False)
        sent.clear()
        delivered.clear()

    try:
        count = 0
        for record in read_dlq(settings, dlq, bounds, since=filters.since, start_at=starts):
            key = (record.partition, record.offset)
            if key in ledger:
                handled = True
            else:
                report.pending += 1
                wanted = False
                if not filters.match(record) or (limit is not None and count >= limit):
                    report.left[record.error_class] += 1
                elif not filters.classes and record.error_class in SKIPPED_UNLESS_NAMED:
                    report.skipped_classes[record.error_class] += 1
                else:
                    wanted = True
                if wanted:
                    count += 1
                    report.replayed[record.error_class] += 1
                    if not dry_run:
                        headers = _replay_headers(_AsMessage(record), dlq)
                        producer.produce(topic, key=record.key, value=record.value, headers=headers,
                                         on_delivery=on_delivery(key))
                        producer.poll(0)
                    sent.append(record)
                handled = wanted
            if prefix.get(record.partition) is not None:
                prefix[record.partition] = record.offset + 1 if handled else None
            if len(sent) >= CHUNK:
                flush()
        flush()
    except KafkaException as exc:
        raise DlqError(f"replay of {dlq} failed: {exc.args[0]}") from None
    finally:
        consumer.close()
    return report


class _AsMessage:
    """What :func:`streams.replay._replay_headers` reads of a message."""

    def __init__(self, record: DeadRecord) -> None:
        self._r = record

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._r.headers.items())

    def partition(self) -> int:
        return self._r.partition

    def offset(self) -> int:
        return self._r.offset


# --- purge --------------------------------------------------------------------------------


@dataclass
class DlqPurge:
    dlq: str
    #: partition -> new log start
    targets: dict[int, int]
    #: records the purge drops, and how many of them were neither replayed nor handled
    records: int
    pending: int
    dry_run: bool


def purge_before(settings: Settings, topic: str, *, before_time: datetime | None = None,
                 before_offsets: Mapping[int, int] | None = None, dry_run: bool = False) -> DlqPurge:
    """Drop the records of ``<topic>.dlq`` before a time or before offsets (Kafka DeleteRecords)."""
    if (before_time is None) == (before_offsets is None):
        raise DlqError("give one of a time or offsets to purge before")
    dlq = dlq_name(topic)
    admin = admin_client(settings.kafka)
    bounds = log_bounds(settings, admin, dlq)
    if before_time is not None:
        at = _list(admin, dlq, len(bounds.ends), OffsetSpec.for_timestamp(int(before_time.timestamp() * 1000)))
        wanted = {p: (o if o >= 0 else bounds.ends[p]) for p, o in at.items()}
    else:
        assert before_offsets is not None
        wanted = {p: before_offsets.get(p, bounds.starts[p]) for p in bounds.ends}
    targets = {p: min(max(o, bounds.starts[p]), bounds.ends[p]) for p, o in wanted.items()}
    ledger = _ledger(settings, dlq)
    records = sum(targets[p] - bounds.starts[p] for p in targets)
    # above the replayer's committed offset and below the target, less what was replayed out of order
    pending = sum(max(targets[p] - bounds.first_pending(p), 0) for p in targets) - sum(
        1 for p, o in ledger if bounds.first_pending(p) <= o < targets.get(p, 0)
    )
    report = DlqPurge(dlq, targets, records, pending, dry_run)
    todo = [TopicPartition(dlq, p, o) for p, o in targets.items() if o > bounds.starts[p]]
    if dry_run or not todo:
        return report
    for tp, future in admin.delete_records(todo, request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S).items():
        try:
            future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise DlqError(f"Kafka refused to purge {dlq}[{tp.partition}]: {exc.args[0]}") from None
    return report


__all__ = ["DlqError", "Filters", "purge_before", "replay_dead_letters", "show", "summarize"]
