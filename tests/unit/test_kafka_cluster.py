"""The pure parts of the Kafka cluster work: replication defaults, partition health, the quorum tool's output, node layout."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from core.errors import ConfigError, StackError
from core.settings import load_settings
from insights.stack.kafka import LocalKafka, node_ports, parse_quorum
from streams.admin import LiveTopic, PartitionState, cluster_size, health_of
from streams.kafka.clients import consumer_config, producer_config
from streams.topics import event_topics, replicated


@pytest.mark.parametrize(
    ("brokers", "factor", "min_insync", "expected"),
    [
        (1, None, None, (1, 1)),
        (2, None, None, (1, 1)),
        (3, None, None, (3, 2)),
        (5, None, None, (3, 2)),
        (5, 5, None, (5, 2)),
        (3, 2, None, (2, 1)),
        (3, None, 3, (3, 3)),
        (1, 3, None, (3, 2)),  # explicit wins: creating the topic then says what is missing
    ],
)
def test_replication_defaults_to_3_and_2_from_three_brokers(brokers, factor, min_insync, expected):
    kafka = load_settings(kafka_replication_factor=factor, kafka_min_insync_replicas=min_insync).kafka
    assert kafka.replication(brokers) == expected


def test_min_insync_above_the_factor_is_one_clear_error():
    kafka = load_settings(kafka_min_insync_replicas=2).kafka
    with pytest.raises(ConfigError, match="INSIGHTS_KAFKA_MIN_INSYNC_REPLICAS=2 is more than the replication factor 1"):
        kafka.replication(1)


def test_replicated_sets_factor_and_min_insync_on_every_spec_and_keeps_their_configs():
    specs = replicated(event_topics(load_settings()), 3, 2)
    assert {s.replication_factor for s in specs} == {3}
    assert all(s.config()["min.insync.replicas"] == "2" for s in specs)
    assert all(s.config()["retention.ms"] for s in specs)


def live(states: dict[int, PartitionState], min_insync: str = "2") -> LiveTopic:
    return LiveTopic("t", len(states), 3, {"min.insync.replicas": min_insync}, states=states)


def test_a_healthy_topic_has_no_health_drift():
    assert health_of(live({0: PartitionState(1, (1, 2, 3), (1, 2, 3))})) == ()


def test_under_replicated_and_offline_partitions_are_drift_nobody_can_fix_here():
    drift = health_of(live({
        0: PartitionState(1, (1, 2, 3), (1, 3)),
        1: PartitionState(2, (2, 3, 1), (2,)),
        2: PartitionState(-1, (2, 3, 1), ()),
        3: PartitionState(3, (3, 1, 2), (3, 1, 2)),
    }))
    kinds = {d.kind: d for d in drift}
    assert set(kinds) == {"offline", "under_replicated"}
    assert not any(d.fixable for d in drift)
    assert kinds["offline"].live.startswith("1 (p2 isr - of 2,3,1)")
    under = kinds["under_replicated"].live
    assert under.startswith("2, 1 below min.insync.replicas=2 (writes refused)")
    assert "p0 isr 1,3 of 1,2,3" in under and "p1 isr 2 of 2,3,1" in under and "p3" not in under


def test_cluster_size_counts_a_broker_that_is_down_but_holds_replicas():
    partition = SimpleNamespace(replicas=[1, 2, 3])
    metadata = SimpleNamespace(
        brokers={1: None, 3: None},  # broker 2 is restarting
        topics={"t": SimpleNamespace(partitions={0: partition})},
    )
    assert cluster_size(metadata) == 3
    assert cluster_size(SimpleNamespace(brokers={1: None}, topics={})) == 1


STATUS = """ClusterId:              MkU3OEVBNTcwNTJENDM2Qg
LeaderId:               2
LeaderEpoch:            7
HighWatermark:          1234
MaxFollowerLag:         3
MaxFollowerLagTimeMs:   12
CurrentVoters:          [{"id": 1, "endpoints": ["CONTROLLER://127.0.0.1:59093"]}, {"id": 2, "endpoints": ["CONTROLLER://127.0.0.1:59095"]}, {"id": 3, "endpoints": ["CONTROLLER://127.0.0.1:59097"]}]
CurrentObservers:       []
"""
REPLICATION = """NodeId	DirectoryId           	LogEndOffset	Lag	LastFetchTimestamp	LastCaughtUpTimestamp	Status
2     	AAAAAAAAAAAAAAAAAAAAAA	1234        	0  	1796094914917     	1796094914917        	Leader
1     	AAAAAAAAAAAAAAAAAAAAAA	1231        	3  	1796094914900     	1796094914900        	Follower
3     	AAAAAAAAAAAAAAAAAAAAAA	1234        	0  	1796094914910     	1796094914910        	Follower
"""


def test_the_quorum_tool_output_is_read_into_leader_voters_and_lag():
    quorum = parse_quorum(STATUS, REPLICATION)
    assert (quorum.leader_id, quorum.leader_epoch, quorum.voters) == (2, 7, (1, 2, 3))
    assert [(m.node_id, m.status, m.lag) for m in quorum.members] == [(1, "Follower", 3), (2, "Leader", 0), (3, "Follower", 0)]
    assert quorum.describe() == "leader 2 (epoch 7), voters 1,2,3, max lag 3"
    with pytest.raises(StackError, match="unexpected answer from the quorum tool"):
        parse_quorum("Error: nothing\n", "")


def test_nodes_take_the_ports_plus_two_per_node_and_one_node_keeps_the_old_layout(tmp_path):
    settings = load_settings(stack_dir=tmp_path, stack_kafka_port=40000, stack_kafka_controller_port=40001)
    assert [node_ports(settings, n) for n in (1, 2, 3)] == [(40000, 40001), (40002, 40003), (40004, 40005)]
    cluster = LocalKafka(settings, brokers=3)
    assert cluster.bootstrap == "127.0.0.1:40000,127.0.0.1:40002,127.0.0.1:40004"
    assert [n.root.name for n in cluster.nodes] == ["node-1", "node-2", "node-3"]
    assert LocalKafka(settings).nodes[0].root == tmp_path / "kafka"


def test_a_stack_formatted_for_one_node_refuses_three_with_the_fix(tmp_path):
    settings = load_settings(stack_dir=tmp_path)
    (tmp_path / "kafka" / "data").mkdir(parents=True)
    (tmp_path / "kafka" / "data" / "meta.properties").write_text("cluster.id=x\n")
    kafka = LocalKafka(settings, brokers=3)
    assert kafka.count == 1
    with pytest.raises(StackError) as info:
        kafka.up()
    assert "formatted with 1 node(s), not 3" in str(info.value) and "insights stack down" in str(info.value)
    # the layout recorded at format time wins when nothing is asked for
    (tmp_path / "kafka" / "cluster.json").write_text(json.dumps({"nodes": 3, "cluster_id": "x"}))
    assert LocalKafka(settings).count == 3


def test_the_server_properties_replicate_internal_topics_like_declared_ones(tmp_path):
    settings = load_settings(stack_dir=tmp_path)
    LocalKafka(settings, brokers=3).write_config()
    text = (tmp_path / "kafka" / "node-2" / "server.properties").read_text()
    assert "node.id=2\n" in text
    assert "controller.quorum.voters=1@127.0.0.1:59093,2@127.0.0.1:59095,3@127.0.0.1:59097\n" in text
    assert "offsets.topic.replication.factor=3\n" in text and "min.insync.replicas=2\n" in text
    assert "unclean.leader.election.enable=false\n" in text
    LocalKafka(load_settings(stack_dir=tmp_path / "one")).write_config()
    single = (tmp_path / "one" / "kafka" / "server.properties").read_text()
    assert "offsets.topic.replication.factor=1\n" in single and "controller.quorum.voters=1@127.0.0.1:59093\n" in single


def test_every_client_is_configured_for_leader_changes_and_producers_stay_safe():
    kafka = load_settings(kafka_overrides='{"acks": "1", "enable.idempotence": "false"}').kafka
    for profile in ("events", "cdc", "dlq"):
        conf = producer_config(kafka, profile)
        assert conf["acks"] == "all" and conf["enable.idempotence"] is True
        # 0 = never: the CDC reader waits out any outage with its bounded queue (issue 12)
        timeout = conf["delivery.timeout.ms"]
        assert (timeout == 0 if profile == "cdc" else timeout >= 60_000) and conf["reconnect.backoff.max.ms"] <= 2000
    conf = consumer_config(kafka, "g")
    assert conf["session.timeout.ms"] > 15_000 + 5_000  # outlasts a coordinator failover
    assert conf["reconnect.backoff.max.ms"] <= 2000
