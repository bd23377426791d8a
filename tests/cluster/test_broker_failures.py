"""Brokers fail under load; the data comes out exactly once (issue 16, item 3).

Each test runs production's processes against the package's three-node cluster
(replication 3, ``min.insync.replicas`` 2) while a producer keeps sending, does one
thing to the brokers, and then checks: every event stored once, nothing lost, the
poison records exactly once in the DLQ, no process died or was restarted by hand.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from streams.admin import describe_topics
from streams.topics import event_topics
from insights.stack import LocalStack
from insights.stack.kafka import LocalKafka
from tests.cluster.conftest import wait_fully_replicated
from tests.cluster.load import Ingest, leaders, probe_config, wait

# the cluster starts inside the first test's time, and three JVMs share the machine: 15 min
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

#: the consumers' session timeout (tests/consumers/procs.consumer_env)
SESSION_TIMEOUT_S = 6.0


def test_sigkill_of_the_broker_leading_most_scrape_partitions_loses_and_duplicates_nothing(
    cluster: LocalKafka, settings: Settings, pg_dsn: str, tmp_path: Path
) -> None:
    ingest = Ingest(settings, pg_dsn, tmp_path, cdc=True).start()
    try:
        ingest.wait_stored(600, timeout=180)
        by_broker = collections.Counter(leaders(ingest.settings, ingest.topic).values())
        victim, led = by_broker.most_common(1)[0]
        cluster.stop_node(victim, kill=True)
        killed_at = time.monotonic()
        at_kill = ingest.stored()
        assert at_kill < ingest.total, "the consumers had caught up before the kill"
        # leadership moves once the controller fences the dead broker (broker.session.timeout.ms)
        wait(lambda: victim not in leaders(ingest.settings, ingest.topic).values(), 90, "the leaders to move")
        moved_after = time.monotonic() - killed_at
        # and `topics describe` says so: the victim's replicas are out of sync (as soon as
        # the broker answering the metadata request has heard of the fencing)
        wait(lambda: "under_replicated" in topic_drift(ingest.settings, ingest.topic), 60, "under-replicated drift")
        assert "offline" not in topic_drift(ingest.settings, ingest.topic)
        # and `stack status` says which node is down, while the quorum of three goes on with two
        rows = {row.name: row for row in LocalStack(cluster.settings).kafka_status()}
        assert not rows[f"kafka-{victim}"].answers and rows[f"kafka-{victim}"].pid is None
        assert all(rows[f"kafka-{n.node_id}"].answers for n in cluster.nodes if n.node_id != victim)
        assert rows["kafka quorum"].answers, rows["kafka quorum"].detail
        assert not rows["kafka quorum"].detail.startswith(f"leader {victim} "), rows["kafka quorum"].detail
        # and ingest goes on with two brokers of three
        ingest.wait_stored(at_kill + 600, timeout=120)
        cluster.start_node(victim, wait=240)
        wait_fully_replicated(cluster.bootstrap)
        wait(lambda: topic_drift(ingest.settings, ingest.topic) == {}, 60, "no drift once the broker is back")
        ingest.finish()
    finally:
        ingest.stop_all()
    assert led >= 2  # six partitions on three brokers: the victim led at least its share
    print(f"\nleadership moved {moved_after:.1f}s after the SIGKILL")


def test_rolling_restart_of_all_three_brokers_under_load(
    cluster: LocalKafka, settings: Settings, pg_dsn: str, tmp_path: Path
) -> None:
    ingest = Ingest(settings, pg_dsn, tmp_path, cdc=True, rate=100).start()
    try:
        ingest.wait_stored(300, timeout=180)
        for node in cluster.nodes:
            before = ingest.stored()
            cluster.stop_node(node.node_id)  # SIGTERM: a controlled shutdown moves its leaders first
            cluster.start_node(node.node_id, wait=240)
            # the next broker goes only once this one has caught up, as an operator would
            wait_fully_replicated(cluster.bootstrap)
            ingest.assert_running()
            assert ingest.stored() > before, f"nothing was stored while node {node.node_id} restarted"
        ingest.finish()
    finally:
        ingest.stop_all()


def topic_drift(settings: Settings, topic: str) -> dict[str, str]:
    """What ``insights topics describe`` reports as drift for ``topic``: kind -> details."""
    spec = next(s for s in event_topics(settings, partitions=6) if s.name == topic)
    (described,) = describe_topics(settings, [spec])
    return {d.kind: str(d) for d in described.drift}


def coordinator_of(settings: Settings, group: str, timeout: float = 60) -> int:
    """The broker coordinating ``group``; asked again while the coordinator moves."""
    admin = AdminClient(probe_config(settings))
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_a_broker_down_longer_than_the_session_timeout_then_back(
    cluster: LocalKafka, settings: Settings, pg_dsn: str, tmp_path: Path
) -> None:
    ingest = Ingest(settings, pg_dsn, tmp_path).start()
    try:
        ingest.wait_stored(600, timeout=180)
        # the group's coordinator: its loss makes every member look for a new one
        victim = coordinator_of(ingest.settings, ingest.group)
        cluster.stop_node(victim, kill=True)
        down_since = time.monotonic()
        at_kill = ingest.stored()
        ingest.wait_stored(at_kill + 1, timeout=120)
        # stay down well past the consumers' session timeout before coming back
        time.sleep(max(0.0, 2.5 * SESSION_TIMEOUT_S - (time.monotonic() - down_since)))
        assert victim != coordinator_of(ingest.settings, ingest.group), "the coordinator did not move"
        ingest.assert_running()
        cluster.start_node(victim, wait=240)
        ingest.finish()
    finally:
        ingest.stop_all()
    wait_fully_replicated(cluster.bootstrap)
