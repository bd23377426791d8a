"""A private three-node Kafka cluster for the tests of this package (never the shared stack's).

One cluster for the package: starting three JVMs costs tens of seconds on a busy
two-core machine, so the tests share it and each one leaves it as it found it (every
node up, no partition under-replicated). PostgreSQL is the session's (``pg_dsn``): no
test here touches the database server itself.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from core.settings import load_settings
from insights.stack import proc
from insights.stack.kafka import LocalKafka
from tests.fix_services import unavailable

#: per node: 320 MB of heap is plenty for these tests and keeps three JVMs beside
#: PostgreSQL and a dozen Python processes on a shared machine
HEAP_MB = 320


def free_port_block(size: int = 12) -> int:
    """A base port with ``size`` free ports after it: node n's broker base + 2(n-1), its
    controller + 1, and its TLS listener base + 6 + 2(n-1) (the stack's default for three
    nodes, insights/stack/kafka.py)."""
    for _ in range(200):
        # below Linux's ephemeral range (32768-60999): a port checked free there can be
        # taken by any outgoing connection before the broker binds it
        base = random.randrange(20000, 32000, 2)
        if all(proc.port_is_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports")


@pytest.fixture(scope="package")
def kafka_cluster() -> Iterator[LocalKafka]:
    root = Path(tempfile.mkdtemp(prefix="insights-cluster-"))
    base = free_port_block()
    settings = load_settings(
        stack_dir=root,
        stack_kafka_port=base,
        stack_kafka_controller_port=base + 1,
        stack_kafka_heap_mb=HEAP_MB,
    )
    cluster = LocalKafka(settings, brokers=3)
    try:
        try:
            cluster.up(wait=400)
        except Exception as exc:  # StackError: say why once, fail under CI
            cluster.down()
            unavailable(f"the three-node Kafka did not start: {exc}")
        yield cluster
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


def under_replicated(bootstrap: str) -> list[str]:
    """Partitions (of every topic, internal ones included) with a replica out of sync or no leader."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=20)
    return [
        f"{name}/{p.id}"
        for name, topic in metadata.topics.items()
        for p in topic.partitions.values()
        if p.leader < 0 or len(p.isrs) < len(p.replicas)
    ]


def wait_fully_replicated(bootstrap: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    lagging = under_replicated(bootstrap)
    while lagging:
        assert time.monotonic() < deadline, f"still under-replicated after {timeout:.0f}s: {lagging[:10]}"
        time.sleep(1.0)
        lagging = under_replicated(bootstrap)


@pytest.fixture
def cluster(kafka_cluster: LocalKafka) -> Iterator[LocalKafka]:
    """The package's cluster, whole: every node running and every replica in sync, before and after."""
    for node in kafka_cluster.nodes:
        if not node.running_pid():
            kafka_cluster.start_node(node.node_id, wait=240)
    wait_fully_replicated(kafka_cluster.bootstrap)
    yield kafka_cluster
    for node in kafka_cluster.nodes:
        if not node.running_pid():
            kafka_cluster.start_node(node.node_id, wait=240)


@pytest.fixture
def kafka_bootstrap(kafka_cluster: LocalKafka) -> str:
    """Overrides the session's broker: ``settings`` of these tests point at the cluster."""
    return kafka_cluster.bootstrap
