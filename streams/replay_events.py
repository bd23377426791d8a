"""Replay a fixed range of a sink's topics into the sink, beside the live consumer group.

``insights replay events`` re-consumes records an operator chooses (everything, a time
range, offsets per partition) through the same loop, writer and batch transaction as live
consumption, so what it stores is exactly what one delivery would have stored: the sinks'
upserts keep the newest version of every row and skip what is there already.

**Its own progress, beside the live group's.** A replay is named (``--name``, default the
sink's name) and consumes under the group ``<INSIGHTS_CONSUMER_GROUP>.replay.<name>``
(:func:`replay_group`) with a manual assignment: no rebalance, no member of the live group
disturbed, and the live group's rows of ``consumer_offsets`` never touched. Its own rows
there are written in the batch transaction with the rows, as every consumer's are.

**A fixed range.** The range is computed once, when a replay of that name first starts
(``--to-time`` through the broker's offsets-for-times, the log end when no end is given)
and kept in ``replay_runs`` (``ddl/0016_replays.sql``). Records written later are not
part of it, and a Ctrl-C followed by the same command continues the same range from the
stored progress; ``--restart`` computes the range again and starts over. A rerun with other
range options is refused rather than silently mixed with the old range.

The loop stops once every partition reached the end of its range (a record at or past the
end, or the end of the log, whichever comes first: offsets of transaction markers and
compacted-away records have no record to reach).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from core.errors import ConfigError, InsightsError
from core.settings import Settings
from streams.archive import ArchivedMessage, ArchiveError, read_container, sha256_of
from streams.consumer.loop import ConsumerLoop
from streams.consumer.transaction import BatchResult
from streams.kafka import admin_client
from streams.pg import connect
from streams.retry import Stopped

log = logging.getLogger("insights.replay")

TIMEOUT_S = 30.0

#: (topic, partition)
Key = tuple[str, int]


class ReplayRangeError(InsightsError):
    """The replay cannot run as asked (unknown topic or partition, a range that changed)."""


def replay_group(settings: Settings, name: str) -> str:
    """The consumer group a replay's progress is stored under (never the live group's)."""
    return f"{settings.consumer.group}.replay.{name}"


@dataclass(frozen=True)
class RangeRequest:
    """What the operator asked for; None everywhere means every record of every partition."""

    topics: tuple[str, ...] = ()
    partitions: tuple[int, ...] = ()
    from_time: datetime | None = None
    to_time: datetime | None = None
    #: partition -> first offset / offset after the last (``P:O``)
    from_offsets: Mapping[int, int] = field(default_factory=dict)
    to_offsets: Mapping[int, int] = field(default_factory=dict)

    def describe(self, sink: str) -> str:
        """A canonical text of the request: two runs of one replay must agree on it."""
        parts = [f"sink={sink}", f"topics={','.join(self.topics) or '*'}",
                 f"partitions={','.join(map(str, sorted(self.partitions))) or '*'}"]
        if self.from_time is not None:
            parts.append(f"from_time={self.from_time.isoformat()}")
        if self.to_time is not None:
            parts.append(f"to_time={self.to_time.isoformat()}")
        if self.from_offsets:
            parts.append("from=" + ",".join(f"{p}:{o}" for p, o in sorted(self.from_offsets.items())))
        if self.to_offsets:
            parts.append("to=" + ",".join(f"{p}:{o}" for p, o in sorted(self.to_offsets.items())))
        return " ".join(parts)


@dataclass(frozen=True)
class PartitionRange:
    topic: str
    partition: int
    #: first offset of the range
    start: int
    #: offset after the last record of the range (fixed when the replay first started)
    end: int
    #: where the replay stands: the next offset it will store (``start`` when not begun)
    position: int

    @property
    def key(self) -> Key:
        return (self.topic, self.partition)

    @property
    def events(self) -> int:
        """Offsets in the range (records, less transaction markers and compacted-away ones)."""
        return self.end - self.start

    @property
    def done(self) -> int:
        return min(max(self.position - self.start, 0), self.events)


@dataclass
class ReplayPlan:
    name: str
    sink: str
    group: str
    ranges: list[PartitionRange]
    #: the range was read back from replay_runs (a rerun) rather than computed now
    resumed: bool
    request: str

    @property
    def events(self) -> int:
        return sum(r.events for r in self.ranges)

    @property
    def done(self) -> int:
        return sum(r.done for r in self.ranges)

    @property
    def remaining(self) -> int:
        return self.events - self.done


def parse_partition_offsets(values: Iterable[str], option: str) -> dict[int, int]:
    """``["0:100", "2:5"]`` -> ``{0: 100, 2: 5}``; a malformed value is a usage error."""
    found: dict[int, int] = {}
    for value in values:
        p, sep, o = value.partition(":")
        try:
            if not sep:
                raise ValueError
            partition, offset = int(p), int(o)
            if partition < 0 or offset < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{option}: expected PARTITION:OFFSET (e.g. 0:1200), got {value!r}") from None
        found[partition] = offset
    return found


# --- computing the range ----------------------------------------------------------------


def _list_offsets(admin: AdminClient, request: dict[TopicPartition, Any]) -> dict[Key, int]:
    if not request:
        return {}
    futures = admin.list_offsets(request, request_timeout=TIMEOUT_S)
    return {(tp.topic, tp.partition): f.result(timeout=TIMEOUT_S).offset for tp, f in futures.items()}


def _partition_counts(admin: AdminClient, topics: Sequence[str], hint: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic in topics:
        meta = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ReplayRangeError(f"topic {topic} does not exist: {hint}")
        counts[topic] = len(meta.partitions)
    return counts


def _at_time(admin: AdminClient, keys: list[Key], when: datetime, option: str, ends: Mapping[Key, int]) -> dict[Key, int]:
    """First offset whose record time is at or after ``when`` (the log end when none is)."""
    if when.tzinfo is None:
        raise ConfigError(f"{option} needs a time zone, e.g. 2025-01-01T00:00:00+00:00")
    ms = int(when.timestamp() * 1000)
    found = _list_offsets(admin, {TopicPartition(t, p): OffsetSpec.for_timestamp(ms) for t, p in keys})
    return {k: (o if o >= 0 else ends[k]) for k, o in found.items()}


def compute_ranges(
    admin: AdminClient, topics: Sequence[str], request: RangeRequest, hint: str
) -> dict[Key, tuple[int, int]]:
    """Per topic partition, ``(start, end)`` of the records ``request`` names, as of now."""
    counts = _partition_counts(admin, topics, hint)
    if (request.from_offsets or request.to_offsets) and len(topics) > 1:
        raise ConfigError(
            f"--from-offset/--to-offset name partitions of one topic; this sink reads {len(topics)}: pass --topic"
        )
    keys: list[Key] = []
    for topic, count in counts.items():
        wanted = request.partitions or tuple(range(count))
        for p in wanted:
            if p >= count:
                raise ConfigError(f"--partitions: {topic} has partitions 0-{count - 1}, not {p}")
            keys.append((topic, p))
    for option, offsets in (("--from-offset", request.from_offsets), ("--to-offset", request.to_offsets)):
        for p in offsets:
            if (topics[0], p) not in keys:
                raise ConfigError(f"{option}: partition {p} is not part of the replay")
    earliest = _list_offsets(admin, {TopicPartition(t, p): OffsetSpec.earliest() for t, p in keys})
    latest = _list_offsets(admin, {TopicPartition(t, p): OffsetSpec.latest() for t, p in keys})
    starts = dict(earliest)
    ends = dict(latest)
    if request.from_time is not None:
        starts = _at_time(admin, keys, request.from_time, "--from-time", latest)
    if request.to_time is not None:
        ends = _at_time(admin, keys, request.to_time, "--to-time", latest)
    for p, o in request.from_offsets.items():
        starts[(topics[0], p)] = o
    for p, o in request.to_offsets.items():
        ends[(topics[0], p)] = o
    ranges: dict[Key, tuple[int, int]] = {}
    for key in keys:
        # clamp into the log: below its start the records are gone, past its end not written yet
        start = min(max(starts[key], earliest[key]), latest[key])
        end = min(max(ends[key], start), latest[key])
        ranges[key] = (start, end)
    return ranges


# --- the range, stored -------------------------------------------------------------------

_LOAD_RUN = """
SELECT topic, partition, start_offset, end_offset, sink, request
FROM replay_runs WHERE replay_name = %s ORDER BY topic, partition
"""

_SAVE_RUN = """
INSERT INTO replay_runs (replay_name, topic, partition, start_offset, end_offset, sink, request)
SELECT %(name)s, w.topic, w.partition, w.start_offset, w.end_offset, %(sink)s, %(request)s
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(starts)s::bigint[], %(ends)s::bigint[])
  AS w(topic, partition, start_offset, end_offset)
"""

_LOAD_PROGRESS = "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = %s"

# a (re)started replay sets its progress outright: unlike a consumer's save, it may move back
_SET_PROGRESS = """
INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, updated_at)
SELECT %(group)s, w.topic, w.partition, w.next_offset, now()
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[]) AS w(topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""


def plan_replay(
    settings: Settings,
    sink: str,
    topics: Sequence[str],
    request: RangeRequest,
    *,
    name: str,
    restart: bool = False,
    dry_run: bool = False,
    hint: str = "create it with `insights topics create`",
) -> ReplayPlan:
    """The replay's range and progress: read back for a rerun, computed (and stored) otherwise.

    A dry run stores nothing. A replay whose range is stored and complete is returned as
    it is (``remaining == 0``): running it again does nothing until ``--restart``.
    """
    group = replay_group(settings, name)
    described = request.describe(sink)
    with connect(settings.pg, "replay-plan", autocommit=False) as conn:
        # one planner per replay name at a time; the lock goes with the transaction
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('insights.replay'), hashtext(%s))", (name,))
        stored = conn.execute(_LOAD_RUN, (name,)).fetchall()
        progress = {(t, p): o for t, p, o in conn.execute(_LOAD_PROGRESS, (group,)).fetchall()}
        if stored and not restart:
            old_sink, old_request = stored[0][4], stored[0][5]
            if old_request != described:
                raise ReplayRangeError(
                    f"replay {name!r} was started as `{old_request}`, not `{described}`: "
                    "run it with the same options, or pass --restart (or another --name)"
                )
            ranges = [
                PartitionRange(t, p, s, e, max(progress.get((t, p), s), s)) for t, p, s, e, _, _ in stored
            ]
            conn.rollback()
            return ReplayPlan(name, old_sink, group, ranges, True, described)
        admin = admin_client(settings.kafka)
        try:
            computed = compute_ranges(admin, topics, request, hint)
        except KafkaException as exc:
            raise ReplayRangeError(f"cannot read the offsets of {', '.join(topics)}: {exc.args[0]}") from None
        ranges = [PartitionRange(t, p, s, e, s) for (t, p), (s, e) in sorted(computed.items())]
        plan = ReplayPlan(name, sink, group, ranges, False, described)
        if dry_run:
            conn.rollback()
            return plan
        conn.execute("DELETE FROM replay_runs WHERE replay_name = %s", (name,))
        cols = {
            "topics": [r.topic for r in ranges], "partitions": [r.partition for r in ranges],
        }
        conn.execute(_SAVE_RUN, {"name": name, "sink": sink, "request": described, **cols,
                                 "starts": [r.start for r in ranges], "ends": [r.end for r in ranges]})
        # progress starts at the range's start: the batch transaction skips what is below it
        conn.execute(_SET_PROGRESS, {"group": group, **cols, "offsets": [r.start for r in ranges]})
        conn.commit()
    return plan


# --- the loop over a fixed range -----------------------------------------------------------

#: ``(events done, events in the range)``, called on the consumer's thread after each batch
Progress = Callable[[int, int], None]


class RangeLoop(ConsumerLoop):
    """The shared consumer loop on a manual assignment, stopping at the end of a range.

    Everything that makes a batch exactly-once (the writer, the batch transaction, the
    rewind when PostgreSQL's offsets went back) is the parent's; this class only decides
    which partitions are read from where, and when to stop.
    """

    def __init__(self, *args: Any, ranges: Sequence[PartitionRange], progress: Progress | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ranges = {r.key: r for r in ranges}
        self.on_progress = progress
        #: next offset read per partition (what was handed to the writer)
        self.read_to: dict[Key, int] = {}
        #: True once every partition reached its end
        self.completed = False

    def client_config(self) -> dict[str, Any]:
        # the live loop's consumer, reading from the start and told when a partition ends
        return {**super().client_config(), "client.id": f"insights-replay-{self.sink.name}",
                "auto.offset.reset": "earliest", "enable.partition.eof": True}

    def run(self) -> BatchResult:
        consumer = Consumer(self.client_config())
        self._consumer = consumer
        try:
            self._require_topics(consumer)
            if self.source.before_consuming is not None:
                self.source.before_consuming()
            keys = sorted(self.ranges)
            stored = self.writer.stored_offsets(keys)
            self.writer.remember(stored)
            todo = self._assign(consumer, stored)
            log.info("replaying", extra={"topic": self.label, "group": self.group, "sink": self.sink.name,
                                         "partitions": len(todo)})
            try:
                self._consume_range(consumer, todo)
            except Stopped:
                self._log_abandoned()
            finally:
                self._finish_inflight_quietly()
            self._report()
        except Exception as exc:
            self.health.fatal(str(exc))
            raise
        finally:
            consumer.close()
            self._consumer = None
            self.writer.close()
        return self.totals

    def _assign(self, consumer: Consumer, stored: Mapping[Key, int]) -> dict[Key, int]:
        """Assign every partition not at its end yet, at its stored progress; return their ends."""
        todo: dict[Key, int] = {}
        assignment = []
        for key, r in self.ranges.items():
            position = max(stored.get(key, r.start), r.start)
            self.read_to[key] = position
            if position < r.end:
                todo[key] = r.end
                assignment.append(TopicPartition(key[0], key[1], position))
        self._assigned = set(todo)
        if assignment:
            consumer.assign(assignment)
        return todo

    def _consume_range(self, consumer: Consumer, todo: dict[Key, int]) -> None:
        batch_size = self.batching.batch_size
        wait = max(self.batching.batch_wait_ms / 1000.0, 0.001)
        while todo and not self.stop.is_set():
            messages = consumer.consume(num_messages=batch_size, timeout=wait)
            self.health.beat()
            if self.writer.finished():
                self._settle(self.writer.finish)
            if self._rewind_if_behind():
                # PostgreSQL lost commits: read again from what it holds (parent's rewind)
                stored = self.writer.stored_offsets(sorted(self.ranges))
                consumer.unassign()
                todo = self._assign(consumer, stored)
                continue
            keep: list[Message] = []
            for msg in messages:
                err = msg.error()
                key = (msg.topic(), msg.partition())
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if key in todo:  # the log ends before the range does: nothing more to read
                            self._done(consumer, todo, key)
                        continue
                    keep.append(msg)  # the parent reports it
                    continue
                if key not in todo:
                    continue
                if msg.offset() >= todo[key]:
                    self._done(consumer, todo, key)
                    continue
                keep.append(msg)
                self.read_to[key] = msg.offset() + 1
                if msg.offset() + 1 >= todo[key]:
                    self._done(consumer, todo, key)
            if keep:
                self.process(keep)
            self._report()
        self.completed = not todo

    def _done(self, consumer: Consumer, todo: dict[Key, int], key: Key) -> None:
        todo.pop(key, None)
        try:
            consumer.pause([TopicPartition(key[0], key[1])])
        except KafkaException:  # not fetching yet: nothing to pause
            pass

    def _report(self) -> None:
        if self.on_progress is None:
            return
        total = sum(r.events for r in self.ranges.values())
        done = sum(min(max(self.read_to.get(k, r.start) - r.start, 0), r.events) for k, r in self.ranges.items())
        self.on_progress(done, total)


def stored_progress(settings: Settings, plan: ReplayPlan) -> dict[Key, int]:
    """The replay's stored next offsets (what a rerun continues from)."""
    with connect(settings.pg, "replay-plan") as conn:
        return {(t, p): o for t, p, o in conn.execute(_LOAD_PROGRESS, (plan.group,)).fetchall()}



# --- the loop over an archive ----------------------------------------------------------------


class ArchiveLoop(ConsumerLoop):
    """The shared consumer loop fed from archive files instead of Kafka.

    The records go through the same decode, prepare, writer and batch transaction; their
    topic, partition and offset are the archived ones, so the replay's progress is stored
    in consumer_offsets under its group exactly as for a replay from the topic, and the
    same command after a Ctrl-C skips what was stored.
    """

    def __init__(self, *args: Any, directory: Path, files: Sequence[dict[str, Any]],
                 progress: Progress | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.directory = directory
        self.files = list(files)
        self.on_progress = progress
        self.completed = False
        self.read = 0

    def run(self) -> BatchResult:
        for entry in self.files:  # a damaged file is refused before anything is written
            if sha256_of(self.directory / entry["file"]) != entry["sha256"]:
                raise ArchiveError(f"{entry['file']}: SHA-256 differs from the manifest (`insights archive verify`)")
        try:
            if self.source.before_consuming is not None:
                self.source.before_consuming()
            keys = sorted({(e["topic"], e["partition"]) for e in self.files})
            stored = self.writer.stored_offsets(keys)
            self.writer.remember(stored)
            total = sum(e["count"] for e in self.files)
            batch: list[Any] = []
            try:
                for entry in self.files:
                    key = (entry["topic"], entry["partition"])
                    for record in read_container(self.directory / entry["file"]):
                        if self.stop.is_set():
                            break
                        self.read += 1
                        if record["offset"] < stored.get(key, -1):
                            continue  # stored by an earlier run of this replay
                        batch.append(ArchivedMessage(record))
                        if len(batch) >= self.batching.batch_size:
                            self.process(batch)
                            batch = []
                            if self.on_progress is not None:
                                self.on_progress(self.read, total)
                    if self.stop.is_set():
                        break
                if batch and not self.stop.is_set():
                    self.process(batch)
                self.completed = not self.stop.is_set()
            except Stopped:
                self._log_abandoned()
            finally:
                self._finish_inflight_quietly()
            if self.on_progress is not None:
                self.on_progress(self.read, total)
        except Exception as exc:
            self.health.fatal(str(exc))
            raise
        finally:
            self.writer.close()
        return self.totals


def restart_archive_replay(settings: Settings, group: str, files: Sequence[dict[str, Any]]) -> None:
    """Set the replay's progress back to the start of each archived range (``--restart``)."""
    starts: dict[Key, int] = {}
    for e in files:
        key = (e["topic"], e["partition"])
        starts[key] = min(starts.get(key, e["start_offset"]), e["start_offset"])
    with connect(settings.pg, "replay-plan") as conn:
        conn.execute(_SET_PROGRESS, {"group": group, "topics": [k[0] for k in starts],
                                     "partitions": [k[1] for k in starts], "offsets": list(starts.values())})
