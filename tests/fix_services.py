"""Where the test services come from, in this order:

1. addresses in the environment (``INSIGHTS_TEST_KAFKA``, ``INSIGHTS_TEST_DSN``);
2. testcontainers, when a Docker engine answers;
3. the local stack the project starts itself (``insights stack up``).

Under ``CI=true`` a service that cannot be had fails the test loudly; elsewhere it skips.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from core.settings import ENV_PREFIX, Settings, load_settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    pg_admin_dsn: str  # a superuser connection to the server's maintenance database
    origin: str  # env | testcontainers | local-stack
    local_stack: object | None = None  # insights.stack.LocalStack when we started it


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere: a missing service must never look like a pass."""
    if IN_CI:
        pytest.fail(f"test service unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"outside CI, test service unavailable (run `insights stack up`): {reason}")


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for an ``insights`` subprocess run with ``settings`` (and ``extra`` on top);
    INSIGHTS_* variables of the test run itself do not leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings.to_env())
    env.update(extra)
    return env


def docker_answers() -> bool:
    with contextlib.suppress(Exception):
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    return False


@contextlib.contextmanager
def _from_testcontainers() -> Iterator[Services]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    pg = PostgresContainer("postgres:15", username="insights", password="insights", dbname="postgres")
    pg.with_command(
        "postgres -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 -c random_page_cost=1.1"
    )
    kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    with pg, kafka:
        dsn = pg.get_connection_url(driver=None)
        yield Services(kafka.get_bootstrap_server(), dsn, "testcontainers")


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    kafka_env = os.environ.get("INSIGHTS_TEST_KAFKA")
    dsn_env = os.environ.get("INSIGHTS_TEST_DSN")
    if kafka_env and dsn_env:
        yield Services(kafka_env, dsn_env, "env")
        return
    if docker_answers():
        with _from_testcontainers() as found:
            yield found
        return
    from insights.stack import LocalStack

    stack = LocalStack(load_settings())
    try:
        stack.up()
    except Exception as exc:  # StackError and friends: say why, once
        unavailable(f"local stack did not start: {exc}")
    yield Services(
        kafka_env or stack.kafka.bootstrap,
        dsn_env or stack.postgres.admin_dsn,
        "local-stack",
        local_stack=stack,
    )
