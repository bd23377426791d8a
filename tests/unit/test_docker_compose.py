"""docker-compose.yml cannot run here (no Docker engine); check it agrees with the local stack."""

from __future__ import annotations

import yaml

from core.paths import REPO_ROOT
from core.settings import StackSettings

COMPOSE = REPO_ROOT / "docker-compose.yml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def host_ports(service: dict) -> set[int]:
    return {int(str(p).split(":")[-2]) for p in service.get("ports", [])}


def test_services_present():
    services = load()["services"]
    for name in ("postgres", "kafka", "pgbouncer", "migrate", "consume-scrape", "consume-alerts", "cdc"):
        assert name in services, name


def test_postgres_is_logical_and_on_the_stack_port():
    pg = load()["services"]["postgres"]
    command = " ".join(pg["command"])
    assert "wal_level=logical" in command
    assert "max_replication_slots" in command
    assert pg["image"].startswith("postgres:15")
    assert StackSettings.model_fields["pg_port"].default in host_ports(pg)


def test_kafka_is_kraft_without_auto_create_on_the_stack_port():
    kafka = load()["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert kafka["image"].split(":")[1].startswith("4.")
    assert StackSettings.model_fields["kafka_port"].default in host_ports(kafka)


def test_pgbouncer_pools_transactions_on_the_stack_port():
    bouncer = load()["services"]["pgbouncer"]
    assert bouncer["environment"]["POOL_MODE"] == "transaction"
    assert StackSettings.model_fields["pgbouncer_port"].default in host_ports(bouncer)


def test_apps_run_real_cli_commands():
    services = load()["services"]
    assert services["consume-scrape"]["command"] == ["insights", "consume", "scrape"]
    assert services["cdc"]["command"] == ["insights", "cdc", "run"]
    assert services["consume-scrape"]["environment"]["INSIGHTS_KAFKA_BOOTSTRAP_SERVERS"] == (
        "kafka:9092,kafka-2:9092,kafka-3:9092"
    )


KAFKA_NODES = ("kafka", "kafka-2", "kafka-3")


def test_kafka_is_three_kraft_nodes_in_one_quorum_as_stack_up_brokers_3():
    from core.settings import load_settings
    from insights.stack.kafka import node_ports

    services = load()["services"]
    envs = [services[name]["environment"] for name in KAFKA_NODES]
    assert [e["KAFKA_NODE_ID"] for e in envs] == [1, 2, 3]
    # one cluster id and one voter set, every node a voter
    assert len({e["CLUSTER_ID"] for e in envs}) == 1
    voters = {e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs}
    assert voters == {"1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert {e["KAFKA_PROCESS_ROLES"] for e in envs} == {"broker,controller"}
    # replicated as the project's default for three brokers
    kafka = load_settings().kafka
    factor, min_insync = kafka.replication(3)
    for env in envs:
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == factor
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == min_insync
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    # host ports as the local stack's nodes: 59092 + 2(n-1), each advertised on its own
    stack = load_settings()
    for n, (name, env) in enumerate(zip(KAFKA_NODES, envs, strict=True), start=1):
        port = node_ports(stack, n)[0]
        assert host_ports(services[name]) == {port}
        assert f"HOST://127.0.0.1:{port}" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert f"HOST://:{port}" in env["KAFKA_LISTENERS"]
    # the broker image is the version the local stack runs
    from insights.stack.kafka import POM, pom_version

    assert {services[name]["image"] for name in KAFKA_NODES} == {f"apache/kafka:{pom_version(POM.read_text())}"}


def test_apps_wait_for_every_kafka_node():
    services = load()["services"]
    for app in ("topics", "consume-scrape", "consume-alerts", "cdc"):
        assert set(KAFKA_NODES) <= set(services[app]["depends_on"]), app
