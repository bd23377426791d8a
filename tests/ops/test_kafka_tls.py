"""The local Kafka's TLS listener, on a private one-node Kafka (never the shared stack's broker,
which other work is using): every Kafka client of the project works over it with
INSIGHTS_KAFKA_SECURITY_PROTOCOL=SSL and the stack CA, a PLAINTEXT client and a client
trusting another CA cannot connect, the certificate rotates under a running broker, and a
stack formatted before the listener existed gets it at its next start with its data.

PostgreSQL is the session's (a fresh migrated database per test): the round trip goes
through the real sinks and the real CDC reader, as operators run them (the CLI).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.settings import Settings, load_settings
from insights.stack import tls
from insights.stack.kafka import LocalKafka, served_certificate
from streams.topics import cdc_topic_name
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.cluster.conftest import free_port_block
from tests.consumers.conftest import read_topic
from tests.fix_services import child_env, unavailable
from tests.service_procs import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 120
MARKERS = 3


@dataclass
class TlsStack:
    """The private Kafka, and what happened when it moved from PLAINTEXT only to TLS."""

    kafka: LocalKafka
    formatted: str
    #: `up` of the TLS configuration while the PLAINTEXT-only broker still ran
    while_running: str
    restarted: str
    cluster_id_before: str
    cluster_id_after: str
    marker_topic: str
    plain_config: str
    #: the SCRAM user the stack registered from settings, and its password
    scram_user: str
    scram_password: str
    registered: str | None

    @property
    def ssl_bootstrap(self) -> str:
        bootstrap = self.kafka.ssl_bootstrap
        assert bootstrap is not None
        return bootstrap

    def client_settings(self, settings: Settings, sasl: bool = False) -> Settings:
        """``settings`` (a test's own database, prefix and group) pointed at the TLS listener,
        or at SASL_SSL as the registered user."""
        env = self.kafka.sasl_client_env() if sasl else self.kafka.ssl_client_env()
        flat = {k[len("INSIGHTS_"):].lower(): v for k, v in env.items()}
        if sasl:
            flat["kafka_sasl_password"] = self.scram_password
        return settings.replace(**flat)


def _cluster_id(kafka: LocalKafka) -> str:
    for line in (kafka.nodes[0].data / "meta.properties").read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1]
    raise AssertionError("no cluster.id in meta.properties")


@pytest.fixture(scope="module")
def tls_stack() -> Iterator[TlsStack]:
    """A one-node Kafka formatted as before TLS existed (INSIGHTS_STACK_KAFKA_SSL_PORT=0), with
    records in a topic, then brought up with the default settings: the listener appears."""
    root = Path(tempfile.mkdtemp(prefix="insights-kafka-tls-"))
    base = free_port_block(4)
    plain = load_settings(
        stack_dir=root, stack_kafka_port=base, stack_kafka_controller_port=base + 1,
        stack_kafka_ssl_port=0, stack_kafka_heap_mb=320, metrics_port=0,
    )
    old = LocalKafka(plain)
    scram_user, scram_password = "insights-tls-test", tls.new_password()
    # the default: TLS on base + 2, SASL_SSL on base + 3; the SCRAM user from the settings
    kafka = LocalKafka(plain.replace(stack_kafka_ssl_port=None, kafka_sasl_username=scram_user,
                                     kafka_sasl_password=scram_password))
    try:
        try:
            formatted = old.up(wait=240)
        except Exception as exc:  # StackError: say why once, fail under CI
            unavailable(f"the private Kafka did not start: {exc}")
        plain_config = old.nodes[0].config.read_text()
        marker_topic = f"tls-marker-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": old.bootstrap})
        admin.create_topics([NewTopic(marker_topic, 1, 1)])[marker_topic].result(timeout=60)
        producer = Producer({"bootstrap.servers": old.bootstrap})
        for n in range(MARKERS):
            producer.produce(marker_topic, value=f"before-tls-{n}".encode())
        assert producer.flush(30) == 0
        before = _cluster_id(old)
        while_running = kafka.up(wait=240)
        kafka.down()
        restarted = kafka.up(wait=240)
        registered = kafka.register_scram_user()
        yield TlsStack(kafka, formatted, while_running, restarted, before, _cluster_id(kafka), marker_topic,
                       plain_config, scram_user, scram_password, registered)
    finally:
        kafka.down()
        shutil.rmtree(root, ignore_errors=True)


def test_a_stack_formatted_before_tls_gets_the_listener_at_its_next_start_and_keeps_its_data(
    tls_stack: TlsStack, settings: Settings
) -> None:
    kafka = tls_stack.kafka
    # before: exactly the PLAINTEXT-only layout, nothing of TLS
    assert "SSL" not in tls_stack.plain_config and "keystore" not in tls_stack.plain_config
    assert tls_stack.formatted == "formatted and started"
    # a running broker is not restarted under its clients: `up` says what to do instead
    assert tls_stack.while_running.startswith("already running, with an older configuration")
    assert "insights stack down" in tls_stack.while_running
    # the next start applies it without formatting again: same cluster, same records
    assert tls_stack.restarted == "started"
    assert tls_stack.cluster_id_after == tls_stack.cluster_id_before
    assert kafka.stale_nodes() == []
    assert kafka.nodes[0].ssl_port == kafka.nodes[0].port + 2
    over_tls = tls_stack.client_settings(settings)
    records = read_topic(over_tls, tls_stack.marker_topic, expect=MARKERS)
    assert sorted(m.value() for m in records) == [f"before-tls-{n}".encode() for n in range(MARKERS)]


def test_every_kafka_client_of_the_project_works_over_tls(
    tls_stack: TlsStack, settings: Settings, pg: psycopg.Connection
) -> None:
    """Admin (topics, status), producer, consumer into PostgreSQL, CDC reader publishing:
    the CLI with nothing but the three TLS settings changed."""
    over_tls = tls_stack.client_settings(settings).replace(cdc_slot_name=f"tls_{uuid.uuid4().hex[:8]}")
    assert over_tls.kafka.client_config()["security.protocol"] == "SSL"
    # COLUMNS: rich tables wide enough that a topic name stays on one line
    env = child_env(over_tls, INSIGHTS_LOG_LEVEL="WARNING", COLUMNS="250")

    def cli(*args: str, timeout: float = 180) -> str:
        done = run_cli(*args, env=env, timeout=timeout)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout

    cli("topics", "create")  # admin client: creates every declared topic
    try:
        cli("cdc", "setup")  # the slot first: the rows written next are streamed
        cli("produce", "scrape", "--products", "12", "--events", str(EVENTS))
        cli("consume", "scrape", "--exit-when-idle", "5", "--metrics-port", "0", timeout=240)
        stored = pg.execute("SELECT count(*) FROM product_snapshots").fetchone()
        assert stored == (EVENTS,)

        listed = cli("topics", "list")  # admin client again: the live topics, read over TLS
        assert over_tls.kafka.topic("events.product_scraped") in listed
        status = json.loads(run_cli("status", "--json", env=env, timeout=120).stdout)
        kafka_rows = [c for c in status["checks"] if c["area"] == "kafka"]
        assert kafka_rows and kafka_rows[0]["state"] == "ok", kafka_rows
        assert kafka_rows[0]["name"] == tls_stack.ssl_bootstrap
        topic_rows = [c for c in status["checks"] if c["area"] == "topics"]
        assert topic_rows and all(c["state"] == "ok" for c in topic_rows), topic_rows

        reader = ServiceProcess(["cdc", "run", "--metrics-port", "0"], {**env, "INSIGHTS_LOG_JSON": "true"})
        try:
            topic = cdc_topic_name(over_tls, "product_snapshots")
            changes = read_topic(over_tls, topic, expect=EVENTS, timeout=120)
        finally:
            code = reader.terminate()
        assert len(changes) == EVENTS, (len(changes), reader.stderr[-20:])
        assert code == 0, reader.stderr[-20:]
    finally:
        run_cli("cdc", "drop", "--yes", env=env, timeout=60)


def test_a_plaintext_client_cannot_connect_to_the_tls_listener(tls_stack: TlsStack, settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": tls_stack.ssl_bootstrap, "security.protocol": "PLAINTEXT"})
    started = time.monotonic()
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    assert time.monotonic() - started < 15  # refused within the timeout, never hanging
    # the CLI says which setting disagrees with the listener, in one line
    plaintext = tls_stack.client_settings(settings).replace(kafka_security_protocol="PLAINTEXT")
    done = run_cli("topics", "list", env=child_env(plaintext), timeout=120)
    assert_one_line_error(done, 1, tls_stack.ssl_bootstrap, "is a TLS listener",
                          "INSIGHTS_KAFKA_SECURITY_PROTOCOL is PLAINTEXT")


def test_a_client_trusting_another_ca_is_refused(tls_stack: TlsStack, settings: Settings, tmp_path: Path) -> None:
    other_ca = tls.ensure_ca(tmp_path / "other-ca")  # a CA of its own, same subject name
    admin = AdminClient({"bootstrap.servers": tls_stack.ssl_bootstrap, "security.protocol": "SSL",
                         "ssl.ca.location": str(other_ca)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    # the right CA, same client otherwise: answers (the refusal is the CA's)
    trusting = AdminClient({"bootstrap.servers": tls_stack.ssl_bootstrap, "security.protocol": "SSL",
                            "ssl.ca.location": str(tls_stack.kafka.ca_file)})
    assert trusting.list_topics(timeout=30).brokers
    wrong = tls_stack.client_settings(settings).replace(kafka_ssl_ca_location=str(other_ca))
    done = run_cli("topics", "list", env=child_env(wrong), timeout=120)
    assert_one_line_error(done, 1, "is not trusted by INSIGHTS_KAFKA_SSL_CA_LOCATION", str(other_ca))


def test_the_certificate_rotates_under_a_running_broker(tls_stack: TlsStack, settings: Settings) -> None:
    kafka = tls_stack.kafka
    node = kafka.nodes[0]
    pid = node.running_pid()
    before = served_certificate(node)
    assert before is not None
    done = run_cli("stack", "rotate-kafka-cert", env=child_env(kafka.settings), timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"kafka node 1 ({node.ssl_address}): serves the new certificate" in done.stdout
    after = served_certificate(node)
    assert after is not None and after != before
    assert served_certificate(node, sasl=True) == after  # SASL_SSL shares the keystore: rotated too
    assert node.running_pid() == pid  # no restart
    # signed by the same CA: a client changes nothing
    over_tls = tls_stack.client_settings(settings)
    assert AdminClient(over_tls.kafka.client_config()).list_topics(timeout=30).brokers
    # and the next start serves the same new certificate (the dynamic override was removed)
    assert kafka.stale_nodes() == []


def test_scram_over_tls_logs_in_the_user_of_the_settings_and_refuses_a_wrong_password(
    tls_stack: TlsStack, settings: Settings
) -> None:
    kafka = tls_stack.kafka
    assert tls_stack.registered == (
        f"SCRAM-SHA-512 user '{tls_stack.scram_user}' registered (SASL_SSL {kafka.sasl_bootstrap})"
    )
    over_sasl = tls_stack.client_settings(settings, sasl=True)
    config = over_sasl.kafka.client_config()
    assert (config["security.protocol"], config["sasl.mechanism"], config["sasl.username"]) == (
        "SASL_SSL", "SCRAM-SHA-512", tls_stack.scram_user)
    env = child_env(over_sasl, INSIGHTS_LOG_LEVEL="WARNING")
    for args in (["topics", "create"], ["produce", "scrape", "--products", "3", "--events", "20"]):
        done = run_cli(*args, env=env, timeout=180)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        assert tls_stack.scram_password not in done.stdout + done.stderr
    assert len(read_topic(over_sasl, over_sasl.kafka.topic("events.product_scraped"), expect=20)) == 20

    wrong = over_sasl.replace(kafka_sasl_password="not-the-password")
    started = time.monotonic()
    with pytest.raises(KafkaException):
        AdminClient(wrong.kafka.client_config()).list_topics(timeout=10)
    assert time.monotonic() - started < 15
    done = run_cli("topics", "list", env=child_env(wrong), timeout=120)
    assert_one_line_error(done, 1, "SASL authentication error", "INSIGHTS_KAFKA_SASL_PASSWORD")
    # no login at all on SASL_SSL: the TLS listener's client (no credentials) is refused there
    anonymous = AdminClient({**tls_stack.client_settings(settings).kafka.client_config(),
                             "bootstrap.servers": kafka.sasl_bootstrap})
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=10)
    # a new password takes effect by registering again (what `insights stack up` does)
    renewed = tls.new_password()
    LocalKafka(kafka.settings.replace(kafka_sasl_password=renewed)).register_scram_user()
    with pytest.raises(KafkaException):
        AdminClient(over_sasl.kafka.client_config()).list_topics(timeout=10)
    assert AdminClient(over_sasl.replace(kafka_sasl_password=renewed).kafka.client_config()).list_topics(
        timeout=30).brokers
    LocalKafka(kafka.settings).register_scram_user()  # back, for the other tests
    for path in (kafka.nodes[0].config, kafka.nodes[0].log):
        text = path.read_text(errors="replace")
        assert tls_stack.scram_password not in text and renewed not in text, path


def test_the_keystore_password_stays_in_its_0600_file(tls_stack: TlsStack) -> None:
    kafka = tls_stack.kafka
    files = kafka.nodes[0].tls
    password = files.password()
    assert len(password) >= 24
    for path in (files.password_file, files.keystore, files.root / "broker.key"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(files.root).st_mode) == 0o700
    config = kafka.nodes[0].config.read_text()
    assert password not in config and str(files.password_file) in config  # named, not held
    assert password not in kafka.nodes[0].log.read_text(errors="replace")
    # what a client is told: the listener and the CA, never a password
    done = run_cli("stack", "env", "--kafka-tls", env=child_env(kafka.settings), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [
        f"INSIGHTS_KAFKA_BOOTSTRAP_SERVERS={tls_stack.ssl_bootstrap}",
        "INSIGHTS_KAFKA_SECURITY_PROTOCOL=SSL",
        f"INSIGHTS_KAFKA_SSL_CA_LOCATION={kafka.ca_file}",
    ]
    assert password not in done.stdout + done.stderr
