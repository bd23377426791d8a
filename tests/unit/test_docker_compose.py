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
    assert services["consume-scrape"]["environment"]["INSIGHTS_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
