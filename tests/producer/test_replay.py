"""Replay against the real broker and database: DLQ re-publishing and consumer group resets."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.admin import ensure_topics
from streams.dlq import H_ERROR_CLASS, H_OFFSET
from streams.producer import EventProducer
from streams.replay import H_REPLAY_FROM, ReplayError, dlq_depths, purge_dlq, replay_dlq, reset_group
from streams.topics import dlq_name, event_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(settings):
    specs = event_topics(settings)
    ensure_topics(settings, specs)
    yield specs
    admin = AdminClient(settings.kafka.client_config())
    for future in admin.delete_topics([s.name for s in specs]).values():
        try:
            future.result(timeout=30)
        except Exception:
            pass


def _read_all(settings, topic, group, expected, partitions):
    consumer = Consumer(settings.kafka.client_config(**{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(got) < expected:
            got.extend(m for m in consumer.consume(500, timeout=1.0) if m.error() is None)
        got.extend(m for m in consumer.consume(50, timeout=1.5) if m.error() is None)
    finally:
        consumer.close()
    return got


def _dead_letters(settings, dlq, n):
    with EventProducer(settings) as producer:
        for i in range(n):
            headers = [(H_ERROR_CLASS, b"validation" if i % 2 else b"constraint"), (H_OFFSET, str(i).encode())]
            producer.produce_event(dlq, f"B0KEY{i:05d}", f"payload-{i}".encode(), headers)


def test_dlq_replay_republishes_once_and_resumes(settings, topics, consumer_group):
    topic = topics[0].name
    dlq = dlq_name(topic)
    _dead_letters(settings, dlq, 30)

    dry = replay_dlq(settings, topic, dry_run=True)
    assert dry.replayed == 30 and dry.by_error_class == {"validation": 15, "constraint": 15}
    assert _read_all(settings, topic, consumer_group, 0, topics[0].partitions) == []

    first = replay_dlq(settings, topic, limit=12)
    assert first.replayed == 12 and first.remaining == 18
    second = replay_dlq(settings, topic)
    assert second.replayed == 18 and second.remaining == 0
    assert replay_dlq(settings, topic).replayed == 0  # nothing twice

    got = _read_all(settings, topic, consumer_group, 30, topics[0].partitions)
    assert sorted(m.value() for m in got) == sorted(f"payload-{i}".encode() for i in range(30))
    for m in got:
        headers = dict(m.headers())
        assert headers[H_REPLAY_FROM] == dlq.encode()
        assert m.key() == f"B0KEY{int(m.value().split(b'-')[1]):05d}".encode()


def test_dlq_depth_counts_what_is_not_replayed_or_purged(settings, topics):
    topic = topics[0].name
    dlq = dlq_name(topic)
    admin = AdminClient(settings.kafka.client_config())
    _dead_letters(settings, dlq, 6)

    def depth():
        return dlq_depths(admin, settings.kafka, {dlq: 1})[dlq]

    assert (depth().depth, depth().log_end) == (6, 6)
    dry = replay_dlq(settings, topic, dry_run=True)
    # the dry run says what is pending, and leaves it pending
    assert (dry.pending, dry.replayed, dry.remaining) == (6, 6, 6) and depth().depth == 6
    assert replay_dlq(settings, topic, limit=4).remaining == 2
    assert depth().depth == 2 and depth().partitions[0].replayed_to == 4
    _dead_letters(settings, dlq, 1)
    assert depth().depth == 3

    dry = purge_dlq(settings, topic, dry_run=True)
    assert (dry.pending, dry.records) == (3, 7) and depth().depth == 3
    done = purge_dlq(settings, topic)
    assert (done.pending, done.records) == (3, 7)
    after = depth()
    assert (after.depth, after.log_start, after.log_end) == (0, 7, 7)
    assert replay_dlq(settings, topic).replayed == 0  # nothing below the new log start is read
    assert purge_dlq(settings, topic).records == 0


def _produce(settings, topic, n, partitions=1):
    with EventProducer(settings) as producer:
        for i in range(n):
            producer.produce_event(topic, None, f"{i}".encode(), partition=i % partitions)


def test_reset_moves_kafka_and_table_offsets(settings, make_topic, consumer_group, pg):
    topic = make_topic(partitions=2)
    _produce(settings, topic, 20, partitions=2)
    pg.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES (%s, %s, 0, 10), (%s, %s, 1, 10)",
        (consumer_group, topic, consumer_group, topic),
    )
    dry = reset_group(settings, consumer_group, topic, to_offset=3, dry_run=True)
    assert [(p.db_before, p.target) for p in dry.partitions] == [(10, 3), (10, 3)]
    assert pg.execute("SELECT sum(next_offset) FROM consumer_offsets WHERE consumer_group = %s", (consumer_group,)).fetchone()[0] == 20

    reset_group(settings, consumer_group, topic, to_offset=3)
    rows = pg.execute(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = %s AND topic = %s ORDER BY 1",
        (consumer_group, topic),
    ).fetchall()
    assert rows == [(0, 3), (1, 3)]
    consumer = Consumer(settings.kafka.client_config(**{"group.id": consumer_group}))
    try:
        committed = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=30)
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == [3, 3]

    # past the end is clamped to the end (10 records per partition)
    after = reset_group(settings, consumer_group, topic, to_offset=999)
    assert [p.target for p in after.partitions] == [10, 10]
    assert [p.kafka_before for p in after.partitions] == [3, 3]


def test_reset_to_time(settings, make_topic, consumer_group, pg):
    topic = make_topic(partitions=1)
    _produce(settings, topic, 5)
    time.sleep(1.1)
    middle = datetime.now(timezone.utc)
    time.sleep(0.1)
    with EventProducer(settings) as producer:
        for i in range(3):
            producer.produce_event(topic, None, b"late", partition=0)
    report = reset_group(settings, consumer_group, topic, to_time=middle)
    assert [p.target for p in report.partitions] == [5]
    future = reset_group(settings, consumer_group, topic, to_time=middle + timedelta(days=1))
    assert [p.target for p in future.partitions] == [8]  # nothing after: the end
    assert pg.execute("SELECT next_offset FROM consumer_offsets WHERE consumer_group = %s", (consumer_group,)).fetchone()[0] == 8


def test_reset_refuses_an_active_group(settings, make_topic, consumer_group, pg):
    topic = make_topic(partitions=1)
    _produce(settings, topic, 4)
    member = Consumer(settings.kafka.client_config(**{"group.id": consumer_group, "auto.offset.reset": "earliest"}))
    member.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.5)
        assert member.assignment(), "the member never joined"
        with pytest.raises(ReplayError, match="active member"):
            reset_group(settings, consumer_group, topic, to_offset=0)
    finally:
        member.close()
    assert pg.execute("SELECT count(*) FROM consumer_offsets WHERE consumer_group = %s", (consumer_group,)).fetchone()[0] == 0


def _dead_letters_of(settings, dlq, classes):
    with EventProducer(settings) as producer:
        for i, error_class in enumerate(classes):
            headers = [(H_ERROR_CLASS, error_class.encode()), (H_OFFSET, str(i).encode())]
            producer.produce_event(dlq, f"B0KEY{i:05d}", f"payload-{i}".encode(), headers)


def test_dlq_replay_skips_classes_that_cannot_succeed_unless_included(settings, topics, consumer_group):
    topic = topics[0].name
    dlq = dlq_name(topic)
    admin = AdminClient(settings.kafka.client_config())
    classes = ["unknown_schema", "validation", "corrupt_payload", "constraint", "unknown_schema", "validation"]
    _dead_letters_of(settings, dlq, classes)

    dry = replay_dlq(settings, topic, dry_run=True)
    assert (dry.pending, dry.replayed, dry.remaining) == (6, 3, 6)
    assert dry.skipped == {"unknown_schema": 2, "corrupt_payload": 1}
    done = replay_dlq(settings, topic)
    assert done.replayed == 3 and done.by_error_class == {"validation": 2, "constraint": 1}
    assert done.skipped == {"unknown_schema": 2, "corrupt_payload": 1} and done.remaining == 0
    # the run dealt with every pending record: the depth is 0, and only replayable ones were sent
    assert dlq_depths(admin, settings.kafka, {dlq: 1})[dlq].depth == 0
    got = _read_all(settings, topic, consumer_group, 3, topics[0].partitions)
    assert sorted(m.value() for m in got) == [b"payload-1", b"payload-3", b"payload-5"]

    # asked for: an unknown schema that was registered since is worth re-sending
    _dead_letters_of(settings, dlq, ["unknown_schema", "corrupt_payload"])
    asked = replay_dlq(settings, topic, include=["unknown_schema"])
    assert asked.replayed == 1 and asked.by_error_class == {"unknown_schema": 1}
    assert asked.skipped == {"corrupt_payload": 1}
    with pytest.raises(ReplayError, match="unknown error class nonsense"):
        replay_dlq(settings, topic, include=["nonsense"])


def test_replay_cli_says_how_many_it_skipped_and_how_to_include_them(settings, topics):
    from tests.cli.helpers import run_cli
    from tests.fix_services import child_env

    topic = topics[0].name
    _dead_letters_of(settings, dlq_name(topic), ["unknown_schema", "validation", "unknown_schema"])
    env = child_env(settings)
    dry = run_cli("replay", "dlq", "--topic", topic, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"3 record(s) pending in {dlq_name(topic)}" in dry.stdout
    assert "would skip 2 record(s) that cannot succeed again (unknown_schema: 2)" in dry.stdout
    done = run_cli("replay", "dlq", "--topic", topic, env=env)
    assert done.returncode == 0, done.stderr
    assert f"replayed 1 record(s) from {dlq_name(topic)}" in done.stdout
    assert "skipped 2 record(s) that cannot succeed again (unknown_schema: 2); to re-send them, run with " \
           "--include-class unknown_schema" in done.stdout
    assert f"0 record(s) left in {dlq_name(topic)}" in done.stdout
    bad = run_cli("replay", "dlq", "--topic", topic, "--include-class", "nonsense", env=env)
    assert bad.returncode == 1 and "unknown error class nonsense" in bad.stderr and "Traceback" not in bad.stderr


def test_reset_shift_by_earliest_and_latest(settings, make_topic, consumer_group, pg):
    topic = make_topic(partitions=2)
    _produce(settings, topic, 20, partitions=2)  # 10 per partition
    pg.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES (%s, %s, 0, 8), (%s, %s, 1, 2)",
        (consumer_group, topic, consumer_group, topic),
    )

    def stored():
        return [r[0] for r in pg.execute(
            "SELECT next_offset FROM consumer_offsets WHERE consumer_group = %s AND topic = %s ORDER BY partition",
            (consumer_group, topic),
        ).fetchall()]

    back = reset_group(settings, consumer_group, topic, shift_by=-5)
    assert [p.target for p in back.partitions] == [3, 0]  # 8-5, and 2-5 clamped to the log start
    assert stored() == [3, 0]
    assert [p.target for p in reset_group(settings, consumer_group, topic, shift_by=4).partitions] == [7, 4]
    assert [p.target for p in reset_group(settings, consumer_group, topic, shift_by=100).partitions] == [10, 10]
    assert [p.target for p in reset_group(settings, consumer_group, topic, to_earliest=True).partitions] == [0, 0]
    assert stored() == [0, 0]
    latest = reset_group(settings, consumer_group, topic, to_latest=True, dry_run=True)
    assert [p.target for p in latest.partitions] == [10, 10] and stored() == [0, 0]
    reset_group(settings, consumer_group, topic, to_latest=True)
    assert stored() == [10, 10]
    consumer = Consumer(settings.kafka.client_config(**{"group.id": consumer_group}))
    try:
        committed = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=30)
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == [10, 10]
    with pytest.raises(ReplayError, match="exactly one"):
        reset_group(settings, consumer_group, topic, to_latest=True, shift_by=1)
