"""Operator replays: dead letters back to their topic, and a consumer group rewound.

Both are safe because the sinks are idempotent: a record stored twice is stored once.

**Dead letters.** ``replay_dlq`` reads ``<topic>.dlq`` up to its end as of the start,
re-publishes each record's original key and value to ``topic`` with headers saying it is
a replay, and commits, per DLQ partition, the offset up to which it re-drove records
under one consumer group per installation, ``<prefix>.dlq-replayer``
(:func:`replayer_group`). It commits after every chunk the broker has acknowledged, so a
second run starts after the first; a crash between an acknowledged chunk and its commit
re-sends that chunk once more: harmless, see above. ``purge_dlq`` drops dead letters
with Kafka's DeleteRecords, which moves the partition's log start offset.

That makes the DLQ's *depth*, the records nobody has replayed or purged yet, exact and
cheap: per partition, ``log end - max(log start, replayer's committed offset)``
(:func:`dlq_depths`, three broker requests for any number of DLQs, no record read). The
sum of the end offsets is not it: it never goes down, and a replayed record that fails
again is a new dead letter on top.

**Classes that cannot succeed.** A dead letter whose bytes are not a record
(``corrupt_payload``) or whose schema nobody knows (``unknown_schema``) fails the same way
on every replay; re-sending it only adds a new dead letter on top. ``replay_dlq`` skips
those classes (:data:`NOT_REPLAYABLE`) unless the caller includes them (``include``; the
CLI's ``--include-class``, e.g. after registering the missing schema), counts what it
skipped by class, and moves past them like past the replayed ones: the run dealt with
every pending record, so the depth goes to 0, and the skipped ones stay in the log until
retention or a purge drops them.

``reset_group`` rewinds (or forwards) a consumer group on one topic. The consumers
seek to the offsets in PostgreSQL's ``consumer_offsets`` on assignment, so both that
table and Kafka's committed offsets are set; the table rows are written in a
transaction that commits only after Kafka accepted the new offsets. A group with
active members is refused: they would overwrite the reset at their next commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

try:  # moved between confluent-kafka releases
    from confluent_kafka import ConsumerGroupTopicPartitions
except ImportError:  # pragma: no cover
    from confluent_kafka.admin import ConsumerGroupTopicPartitions  # type: ignore[no-redef]

from core.errors import InsightsError
from core.settings import KafkaSettings, Settings
from streams.admin import end_offsets
from streams.dlq import H_ERROR_CLASS, H_OFFSET, H_PARTITION
from streams.faults import ErrorClass
from streams.kafka import admin_client, consumer_config
from streams.pg import connect
from streams.producer import EventProducer
from streams.topics import dlq_name

H_REPLAY_FROM = "insights.replay.from"
H_REPLAY_OFFSET = "insights.replay.offset"
H_REPLAY_AT = "insights.replay.at"
H_REPLAY_ERROR_CLASS = "insights.replay.error.class"

CHUNK = 1000
TIMEOUT_S = 30.0


class ReplayError(InsightsError):
    """A replay or reset cannot be done as asked (group active, topic missing, bad target)."""


# --- DLQ depth -------------------------------------------------------------------------


def replayer_group(kafka: KafkaSettings) -> str:
    """The consumer group whose committed offsets say how far each DLQ was replayed.

    Named after the topic prefix, not a consumer group: a DLQ belongs to its topic,
    whichever group dead-lettered into it, and ``insights status`` must find it from the
    settings alone.
    """
    return f"{kafka.topic_prefix}.dlq-replayer"


@dataclass(frozen=True)
class DlqPartition:
    partition: int
    #: first offset still in the log (moved by a purge or by retention)
    log_start: int
    #: next offset to be written
    log_end: int
    #: the replayer's committed offset (None: never replayed)
    replayed_to: int | None

    @property
    def first_pending(self) -> int:
        if self.replayed_to is None or self.replayed_to > self.log_end:
            # past the end: a commit left from an earlier topic of the same name, not progress
            return self.log_start
        return max(self.log_start, self.replayed_to)

    @property
    def pending(self) -> int:
        return max(self.log_end - self.first_pending, 0)


@dataclass(frozen=True)
class DlqDepth:
    topic: str
    partitions: tuple[DlqPartition, ...]

    @property
    def depth(self) -> int:
        """Dead letters not yet replayed or purged."""
        return sum(p.pending for p in self.partitions)

    @property
    def log_end(self) -> int:
        """Every dead letter ever written (what the old status reported as the depth)."""
        return sum(p.log_end for p in self.partitions)

    @property
    def log_start(self) -> int:
        """Dead letters purged or expired by retention."""
        return sum(p.log_start for p in self.partitions)


def _offsets(admin: AdminClient, tps: list[TopicPartition], spec: OffsetSpec, timeout: float) -> dict[tuple[str, int], int]:
    if not tps:
        return {}
    futures = admin.list_offsets({tp: spec for tp in tps}, request_timeout=timeout)
    return {(tp.topic, tp.partition): f.result(timeout=timeout).offset for tp, f in futures.items()}


def _committed(admin: AdminClient, group: str, tps: list[TopicPartition], timeout: float) -> dict[tuple[str, int], int]:
    """Committed offsets of ``group`` on ``tps``; partitions with none are left out."""
    if not tps:
        return {}
    request = [ConsumerGroupTopicPartitions(group, tps)]
    result = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group].result(timeout=timeout)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def dlq_depths(
    admin: AdminClient, kafka: KafkaSettings, dlqs: Mapping[str, int], timeout: float = TIMEOUT_S
) -> dict[str, DlqDepth]:
    """Depth of each DLQ in ``dlqs`` (topic -> partition count); see the module doc.

    Raises ``KafkaException`` when the broker does not answer: the caller decides
    whether that is an error (replay) or a finding (status).
    """
    tps = [TopicPartition(t, p) for t, n in dlqs.items() for p in range(n)]
    starts = _offsets(admin, tps, OffsetSpec.earliest(), timeout)
    ends = _offsets(admin, tps, OffsetSpec.latest(), timeout)
    replayed = _committed(admin, replayer_group(kafka), tps, timeout)
    return {
        topic: DlqDepth(
            topic,
            tuple(
                DlqPartition(p, starts[(topic, p)], ends[(topic, p)], replayed.get((topic, p))) for p in range(n)
            ),
        )
        for topic, n in dlqs.items()
    }


# --- DLQ replay ------------------------------------------------------------------------


#: dead-letter classes a replay cannot fix: the same bytes fail the same way again
NOT_REPLAYABLE: frozenset[str] = frozenset({ErrorClass.CORRUPT.value, ErrorClass.UNKNOWN_SCHEMA.value})

#: every class a dead letter can have (the ``insights.error.class`` header)
ERROR_CLASSES: tuple[str, ...] = tuple(c.value for c in ErrorClass)


def skipped_classes(include: Collection[str] = ()) -> frozenset[str]:
    """The classes a replay leaves out when the caller asks to include ``include``."""
    unknown = sorted(set(include) - set(ERROR_CLASSES))
    if unknown:
        raise ReplayError(f"unknown error class {', '.join(unknown)}: one of {', '.join(ERROR_CLASSES)}")
    return NOT_REPLAYABLE - set(include)


@dataclass
class DlqReplayReport:
    source: str
    target: str
    replayed: int = 0
    dry_run: bool = False
    #: replayed (or, on a dry run, to be replayed) per error class
    by_error_class: Counter[str] = field(default_factory=Counter)
    #: left out because they cannot succeed again, per error class (see the module doc)
    skipped: Counter[str] = field(default_factory=Counter)
    #: dead letters not yet replayed or purged when the run started
    pending: int = 0
    #: dead letters still pending after this run (beyond --limit; all of them on a dry run)
    remaining: int = 0


def _partitions(admin: AdminClient, topic: str) -> int:
    meta = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ReplayError(f"topic {topic} does not exist")
    return len(meta.partitions)


def _replay_headers(msg, source: str) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    original = dict(msg.headers() or [])
    return [
        (H_REPLAY_FROM, source.encode()),
        (H_REPLAY_OFFSET, f"{msg.partition()}:{msg.offset()}".encode()),
        (H_REPLAY_AT, datetime.now(timezone.utc).isoformat().encode()),
        (H_REPLAY_ERROR_CLASS, original.get(H_ERROR_CLASS) or b""),
        # where the record first lived, as the DLQ recorded it
        (H_PARTITION, original.get(H_PARTITION) or b""),
        (H_OFFSET, original.get(H_OFFSET) or b""),
    ]


def _kafka_error(exc: KafkaException) -> str:
    error = exc.args[0]
    return error.str() if isinstance(error, KafkaError) else str(error)


def replay_dlq(
    settings: Settings,
    topic: str,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    include: Collection[str] = (),
) -> DlqReplayReport:
    """Re-publish ``<topic>.dlq`` to ``topic`` (see the module doc).

    Records of the :data:`NOT_REPLAYABLE` classes not named in ``include`` are skipped
    (counted in ``report.skipped``). ``limit`` counts every record the run handles,
    skipped or replayed. A dry run reads the same records and counts them by error class,
    but publishes and commits nothing: ``pending`` and ``remaining`` then both say what a
    real run would face.
    """
    leave_out = skipped_classes(include)
    source = dlq_name(topic)
    admin = admin_client(settings.kafka)
    report = DlqReplayReport(source, topic, dry_run=dry_run)
    try:
        _partitions(admin, topic)
        count = _partitions(admin, source)
        depth = dlq_depths(admin, settings.kafka, {source: count})[source]
    except KafkaException as exc:
        raise ReplayError(f"cannot read the offsets of {source}: {_kafka_error(exc)}") from None
    # start after what was replayed and what was purged: offsets below the log start are gone
    starts = {p.partition: p.first_pending for p in depth.partitions}
    todo = {p.partition: p.log_end for p in depth.partitions if p.pending}
    report.pending = depth.depth
    consumer = Consumer(consumer_config(settings.kafka, replayer_group(settings.kafka), **{"auto.offset.reset": "earliest"}))
    try:
        # explicit assignment: no rebalance to wait for, and no other member to share with
        consumer.assign([TopicPartition(source, p, starts[p]) for p in todo])
        budget = min(limit, report.pending) if limit is not None else report.pending
        positions = dict(starts)
        with EventProducer(settings) as producer:
            chunk = 0
            handled = 0  # replayed or skipped
            while todo and handled < budget:
                for msg in consumer.consume(num_messages=min(CHUNK, budget - handled), timeout=1.0):
                    if msg.error() is not None:
                        raise ReplayError(f"cannot read {source}: {msg.error().str()}")
                    p = msg.partition()
                    if p not in todo or msg.offset() >= todo[p]:
                        continue  # written after we started: the next run's business
                    error_class = dict(msg.headers() or []).get(H_ERROR_CLASS, b"?").decode()
                    if error_class in leave_out:
                        report.skipped[error_class] += 1
                    else:
                        report.by_error_class[error_class] += 1
                        if not dry_run:
                            producer.produce_event(topic, msg.key(), msg.value(), _replay_headers(msg, source))
                        report.replayed += 1
                    handled += 1
                    chunk += 1
                    positions[p] = msg.offset() + 1
                    if positions[p] >= todo[p]:
                        del todo[p]
                    if handled >= budget:
                        break
                if not dry_run and (chunk >= CHUNK or not todo or handled >= budget) and chunk:
                    producer.flush()  # raises if anything was not acknowledged: then no commit
                    # these committed offsets are what the DLQ depth is measured from
                    consumer.commit(
                        offsets=[TopicPartition(source, p, o) for p, o in positions.items()], asynchronous=False
                    )
                    chunk = 0
        report.remaining = report.pending if dry_run else report.pending - handled
    except KafkaException as exc:
        raise ReplayError(f"replay of {source} failed: {_kafka_error(exc)}") from None
    finally:
        consumer.close()
    return report


# --- DLQ purge -------------------------------------------------------------------------


@dataclass
class DlqPurgeReport:
    source: str
    #: dead letters not yet replayed that the purge drops (or would drop, on a dry run)
    pending: int
    #: records the purge removes from the log, replayed ones included
    records: int
    dry_run: bool


def purge_dlq(settings: Settings, topic: str, *, dry_run: bool = False) -> DlqPurgeReport:
    """Drop every record of ``<topic>.dlq`` written so far (DeleteRecords up to each log end).

    Records written after the offsets were read survive: a purge never drops a dead
    letter nobody was shown.
    """
    source = dlq_name(topic)
    admin = admin_client(settings.kafka)
    try:
        count = _partitions(admin, source)
        depth = dlq_depths(admin, settings.kafka, {source: count})[source]
    except KafkaException as exc:
        raise ReplayError(f"cannot read the offsets of {source}: {_kafka_error(exc)}") from None
    report = DlqPurgeReport(
        source, depth.depth, sum(p.log_end - p.log_start for p in depth.partitions), dry_run
    )
    todo = [TopicPartition(source, p.partition, p.log_end) for p in depth.partitions if p.log_end > p.log_start]
    if dry_run or not todo:
        return report
    for tp, future in admin.delete_records(todo, request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S).items():
        try:
            future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ReplayError(f"Kafka refused to purge {source}[{tp.partition}]: {_kafka_error(exc)}") from None
    return report


# --- consumer group reset ----------------------------------------------------------------


@dataclass(frozen=True)
class PartitionReset:
    partition: int
    kafka_before: int | None  # None: nothing committed
    db_before: int | None
    target: int


@dataclass
class ResetReport:
    group: str
    topic: str
    partitions: list[PartitionReset]
    dry_run: bool


def _active_members(admin: AdminClient, group: str) -> int:
    future = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group]
    try:
        description = future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(f"cannot describe group {group}: {exc.args[0].str()}") from None
    return len(description.members)


def _targets(
    admin: AdminClient, topic: str, count: int, to_time: datetime | None, to_offset: int | None
) -> dict[int, int]:
    ends = end_offsets(admin, topic, count)
    if to_offset is not None:
        if to_offset < 0:
            raise ReplayError("--to-offset must be 0 or more")
        starts = {
            tp.partition: f.result(timeout=TIMEOUT_S).offset
            for tp, f in admin.list_offsets(
                {TopicPartition(topic, p): OffsetSpec.earliest() for p in range(count)}, request_timeout=TIMEOUT_S
            ).items()
        }
        # clamp into what the log holds: before the start is the start, past the end is the end
        return {p: min(max(to_offset, starts[p]), ends[p]) for p in range(count)}
    assert to_time is not None
    if to_time.tzinfo is None:
        raise ReplayError("--to-time needs a time zone, e.g. 2025-01-01T00:00:00+00:00")
    ms = int(to_time.timestamp() * 1000)
    request = {TopicPartition(topic, p): OffsetSpec.for_timestamp(ms) for p in range(count)}
    found = {tp.partition: f.result(timeout=TIMEOUT_S).offset for tp, f in admin.list_offsets(request, request_timeout=TIMEOUT_S).items()}
    # -1: no record at or after that time: the group starts at the end
    return {p: (found[p] if found[p] >= 0 else ends[p]) for p in range(count)}


def _relative_targets(
    admin: AdminClient,
    topic: str,
    count: int,
    db_before: Mapping[int, int],
    kafka_before: Mapping[int, int | None],
    shift_by: int | None,
    to_latest: bool,
) -> dict[int, int]:
    """Targets of --shift-by, --to-earliest (``shift_by`` None, ``to_latest`` False) and --to-latest."""
    ends = end_offsets(admin, topic, count)
    starts = _offsets(admin, [TopicPartition(topic, p) for p in range(count)], OffsetSpec.earliest(), TIMEOUT_S)
    targets: dict[int, int] = {}
    for p in range(count):
        start, end = starts[(topic, p)], ends[p]
        if shift_by is None:
            targets[p] = end if to_latest else start
            continue
        # where the group stands: PostgreSQL's row is what the consumers seek to
        current = db_before.get(p, kafka_before.get(p))
        base = start if current is None else current
        targets[p] = min(max(base + shift_by, start), end)
    return targets


def _kafka_committed(admin: AdminClient, group: str, topic: str, count: int) -> dict[int, int | None]:
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(count)])]
    result = admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[group].result(timeout=TIMEOUT_S)
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in result.topic_partitions}


_DB_BEFORE = """
SELECT partition, next_offset FROM consumer_offsets
WHERE consumer_group = %s AND topic = %s FOR UPDATE
"""

# a reset sets the offset outright: unlike the consumers' save, it may move backwards
_DB_SET = """
INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, updated_at)
SELECT %(group)s, %(topic)s, w.partition, w.next_offset, now()
FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS w(partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""


def reset_group(
    settings: Settings,
    group: str,
    topic: str,
    *,
    to_time: datetime | None = None,
    to_offset: int | None = None,
    shift_by: int | None = None,
    to_earliest: bool = False,
    to_latest: bool = False,
    dry_run: bool = False,
) -> ResetReport:
    """Point ``group`` at a new offset on every partition of ``topic`` (see the module doc).

    Exactly one target: ``to_time``, ``to_offset``, ``shift_by`` (relative to where the group
    stands: its consumer_offsets row, else Kafka's committed offset, else the log start; as
    ``kafka-consumer-groups --shift-by``), ``to_earliest`` or ``to_latest``. Every target is
    clamped into what the log holds.
    """
    chosen = [to_time is not None, to_offset is not None, shift_by is not None, to_earliest, to_latest]
    if sum(chosen) != 1:
        raise ReplayError("give exactly one of --to-time, --to-offset, --shift-by, --to-earliest and --to-latest")
    admin = admin_client(settings.kafka)
    count = _partitions(admin, topic)
    members = _active_members(admin, group)
    if members:
        raise ReplayError(f"group {group} has {members} active member(s): stop its consumers first")
    kafka_before = _kafka_committed(admin, group, topic, count)
    # not autocommit: the offsets commit only once Kafka accepted the new ones (see below)
    with connect(settings.pg, "replay-reset", autocommit=False) as conn:
        db_before = dict(conn.execute(_DB_BEFORE, (group, topic)).fetchall())
        if to_time is not None or to_offset is not None:
            targets = _targets(admin, topic, count, to_time, to_offset)
        else:
            targets = _relative_targets(admin, topic, count, db_before, kafka_before, shift_by, to_latest)
        report = ResetReport(
            group,
            topic,
            [PartitionReset(p, kafka_before.get(p), db_before.get(p), targets[p]) for p in range(count)],
            dry_run,
        )
        if dry_run:
            conn.rollback()
            return report
        conn.execute(
            _DB_SET,
            {"group": group, "topic": topic, "partitions": list(targets), "offsets": list(targets.values())},
        )
        # Kafka first, inside the open transaction: if the broker refuses, the table is untouched
        if _active_members(admin, group):
            raise ReplayError(f"group {group} gained members during the reset: nothing changed")
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in targets.items()])]
        try:
            admin.alter_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[group].result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ReplayError(f"Kafka refused the new offsets of {group}: {exc.args[0].str()}") from None
        conn.commit()
    return report
