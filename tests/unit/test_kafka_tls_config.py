"""The Kafka TLS listener's configuration, keystore and diagnosis, without a broker: the
listener lines of one node and of a cluster, the ports, the keystore openssl makes, the
stale-configuration check, and what a client that disagrees with a listener is told
(real TLS and TCP servers on loopback stand in for the broker's listener)."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from core.errors import ConfigError, StackError
from core.settings import load_settings
from insights.cli import kafka_listener
from insights.cli.failures import operator_error
from insights.stack import tls
from insights.stack.kafka import LocalKafka, make_keystore
from tests.cli.helpers import assert_one_line_error, run_cli


def _lines(text: str, *prefixes: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefixes)]


LISTENER_KEYS = ("listeners=", "advertised.listeners=", "listener.security.protocol.map=", "inter.broker.listener.name=")


def test_one_node_listens_for_plaintext_and_tls_and_the_nodes_talk_plaintext(tmp_path: Path) -> None:
    kafka = LocalKafka(load_settings(stack_dir=tmp_path))
    text = kafka.rendered_config(kafka.nodes[0])
    assert _lines(text, *LISTENER_KEYS) == [
        "listeners=PLAINTEXT://127.0.0.1:59092,SSL://127.0.0.1:59094,SASL_SSL://127.0.0.1:59095,"
        "CONTROLLER://127.0.0.1:59093",
        "advertised.listeners=PLAINTEXT://127.0.0.1:59092,SSL://127.0.0.1:59094,SASL_SSL://127.0.0.1:59095",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
    ]
    tls_dir = tmp_path / "kafka" / "tls"
    assert _lines(text, "listener.name.ssl.", "config.providers") == [
        "config.providers=insightsfile",
        "config.providers.insightsfile.class=org.apache.kafka.common.config.provider.FileConfigProvider",
        "listener.name.ssl.ssl.keystore.type=PKCS12",
        f"listener.name.ssl.ssl.keystore.location={tls_dir}/broker.p12",
        f"listener.name.ssl.ssl.keystore.password=${{insightsfile:{tls_dir}/keystore.properties:password}}",
        f"listener.name.ssl.ssl.key.password=${{insightsfile:{tls_dir}/keystore.properties:password}}",
        "listener.name.ssl.ssl.protocol=TLSv1.3",
        "listener.name.ssl.ssl.enabled.protocols=TLSv1.3",
        "listener.name.ssl.ssl.client.auth=none",
    ]
    # SASL_SSL: the same TLS lines under its own prefix, then SCRAM-SHA-512 only
    sasl = _lines(text, "listener.name.sasl_ssl.")
    assert sasl[:7] == [line.replace("listener.name.ssl.", "listener.name.sasl_ssl.")
                        for line in _lines(text, "listener.name.ssl.")]
    assert sasl[7:] == [
        "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    ]
    assert kafka.ssl_bootstrap == "127.0.0.1:59094" and kafka.sasl_bootstrap == "127.0.0.1:59095"
    assert kafka.ssl_client_env() == {
        "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:59094",
        "INSIGHTS_KAFKA_SECURITY_PROTOCOL": "SSL",
        "INSIGHTS_KAFKA_SSL_CA_LOCATION": str(tmp_path / "tls" / "ca.crt"),
    }
    # SASL: the user of the settings, never its password
    named = LocalKafka(load_settings(stack_dir=tmp_path, kafka_sasl_username="alice", kafka_sasl_password="pw-1"))
    assert named.sasl_client_env() == {
        "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:59095",
        "INSIGHTS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "INSIGHTS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "INSIGHTS_KAFKA_SSL_CA_LOCATION": str(tmp_path / "tls" / "ca.crt"),
        "INSIGHTS_KAFKA_SASL_USERNAME": "alice",
    }


def test_a_cluster_puts_its_tls_ports_above_its_other_ports_and_each_node_has_its_keystore(tmp_path: Path) -> None:
    kafka = LocalKafka(load_settings(stack_dir=tmp_path), brokers=3)
    assert [n.ssl_port for n in kafka.nodes] == [59098, 59100, 59102]
    assert [n.sasl_port for n in kafka.nodes] == [59099, 59101, 59103]
    others = {p for n in kafka.nodes for p in (n.port, n.controller_port)}
    assert others == set(range(59092, 59098)) and not others & set(range(59098, 59104))
    second = kafka.rendered_config(kafka.nodes[1])
    assert _lines(second, "listeners=", "advertised.listeners=") == [
        "listeners=PLAINTEXT://127.0.0.1:59094,SSL://127.0.0.1:59100,SASL_SSL://127.0.0.1:59101,"
        "CONTROLLER://127.0.0.1:59095",
        "advertised.listeners=PLAINTEXT://127.0.0.1:59094,SSL://127.0.0.1:59100,SASL_SSL://127.0.0.1:59101",
    ]
    assert f"keystore.location={tmp_path}/kafka/node-2/tls/broker.p12\n" in second
    assert kafka.ssl_bootstrap == "127.0.0.1:59098,127.0.0.1:59100,127.0.0.1:59102"
    # an explicit port: node n takes it + 2(n-1), like the other ports
    explicit = LocalKafka(load_settings(stack_dir=tmp_path, stack_kafka_ssl_port=40000), brokers=3)
    assert [n.ssl_port for n in explicit.nodes] == [40000, 40002, 40004]


def test_ssl_port_0_writes_the_plaintext_only_layout_of_before(tmp_path: Path) -> None:
    kafka = LocalKafka(load_settings(stack_dir=tmp_path, stack_kafka_ssl_port=0))
    text = kafka.rendered_config(kafka.nodes[0])
    assert _lines(text, *LISTENER_KEYS) == [
        "listeners=PLAINTEXT://127.0.0.1:59092,CONTROLLER://127.0.0.1:59093",
        "advertised.listeners=PLAINTEXT://127.0.0.1:59092",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    ]
    assert "SSL" not in text and "keystore" not in text and "config.providers" not in text
    assert kafka.ssl_bootstrap is None and kafka.ssl_client_env() == {}
    assert kafka.sasl_bootstrap is None and kafka.sasl_client_env() == {}


def test_a_tls_port_that_collides_with_another_node_is_refused_before_anything_starts(tmp_path: Path) -> None:
    # 59094 is node 2's broker port in a three-node cluster
    kafka = LocalKafka(load_settings(stack_dir=tmp_path, stack_kafka_ssl_port=59094), brokers=3)
    with pytest.raises(StackError) as info:
        kafka.up()
    assert "59094" in str(info.value) and "INSIGHTS_STACK_KAFKA_SSL_PORT" in str(info.value)
    assert not (tmp_path / "kafka" / "node-1" / "server.properties").exists()
    # SASL_SSL takes the TLS port + 1: 59091 would put it on the broker port
    below = LocalKafka(load_settings(stack_dir=tmp_path / "one", stack_kafka_ssl_port=59091))
    with pytest.raises(StackError, match=r"59092 .*INSIGHTS_STACK_KAFKA_SSL_PORT \+ 1"):
        below.up()


def test_a_running_node_with_the_config_of_before_is_reported_stale(tmp_path: Path) -> None:
    LocalKafka(load_settings(stack_dir=tmp_path, stack_kafka_ssl_port=0)).write_config()
    kafka = LocalKafka(load_settings(stack_dir=tmp_path))
    assert kafka.stale_nodes() == []  # not running: its next start writes the new config anyway
    kafka.nodes[0].pid_file.write_text(f"{os.getpid()}\n")  # a live pid: "running"
    assert kafka.stale_nodes() == [1]
    kafka.write_config()
    assert kafka.stale_nodes() == []


def test_the_keystore_holds_a_certificate_of_the_stack_ca_under_a_generated_password(tmp_path: Path) -> None:
    kafka = LocalKafka(load_settings(stack_dir=tmp_path))
    kafka.ensure_keystores()
    files = kafka.nodes[0].tls
    password = files.password()
    assert len(password) >= 24
    assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    for path in (files.password_file, files.keystore, files.root / "broker.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ca = kafka.ca_file
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(files.certificate)],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    sans = subprocess.run(["openssl", "x509", "-in", str(files.certificate), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True).stdout
    assert "IP Address:127.0.0.1" in sans and "DNS:localhost" in sans
    # the keystore opens with the file's password (and with no other): key + leaf + CA
    dump = subprocess.run(["openssl", "pkcs12", "-in", str(files.keystore), "-nodes", "-passin", "env:PW"],
                          capture_output=True, text=True, env={**os.environ, "PW": password})
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.count("BEGIN CERTIFICATE") == 2 and "PRIVATE KEY" in dump.stdout
    wrong = subprocess.run(["openssl", "pkcs12", "-in", str(files.keystore), "-nodes", "-passin", "pass:wrong"],
                           capture_output=True, text=True)
    assert wrong.returncode != 0
    # re-issued (rotation): a new certificate, the same password (the running broker holds it)
    first = files.certificate.read_text()
    files.keystore.unlink()
    make_keystore(files, tls.stack_ca_dir(tmp_path))
    assert files.password() == password and files.certificate.read_text() != first


# --- what a client that disagrees with the listener is told ---------------------------


def _serve(listener: socket.socket, handle) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server on loopback with a certificate of a fresh stack CA; (port, CA file)."""
    crt, key = tls.issue(tmp_path / "tls", "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)

    def handle(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as wrapped:
                wrapped.recv(1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        _serve(listener, handle)
        yield listener.getsockname()[1], tmp_path / "tls" / "ca.crt"


@pytest.fixture
def plain_listener() -> Iterator[int]:
    """A TCP server that drops a connection on its first bytes, as Kafka does with a ClientHello."""

    def handle(conn: socket.socket) -> None:
        try:
            conn.recv(5)
        finally:
            conn.close()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        _serve(listener, handle)
        yield listener.getsockname()[1]


def _kafka(port: int, protocol: str, ca: Path | None = None):  # type: ignore[no-untyped-def]
    return load_settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", kafka_security_protocol=protocol,
                         kafka_ssl_ca_location=str(ca) if ca else None).kafka


def test_a_plaintext_client_at_a_tls_listener_is_told_to_use_ssl(tls_listener: tuple[int, Path]) -> None:
    port, ca = tls_listener
    fix = kafka_listener.diagnose(_kafka(port, "PLAINTEXT"))
    assert fix is not None and "is a TLS listener" in fix and "INSIGHTS_KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in fix
    assert kafka_listener.diagnose(_kafka(port, "SSL", ca)) is None  # agreeing and trusted: nothing to say


def test_a_tls_client_at_a_plaintext_listener_is_told_so(plain_listener: int) -> None:
    fix = kafka_listener.diagnose(_kafka(plain_listener, "SSL"))
    assert fix is not None and "does not speak TLS" in fix and "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS" in fix
    assert kafka_listener.diagnose(_kafka(plain_listener, "PLAINTEXT")) is None


def test_a_client_trusting_another_ca_is_told_which_setting_to_fix(
    tls_listener: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_listener
    other = tls.ensure_ca(tmp_path / "other")
    fix = kafka_listener.diagnose(_kafka(port, "SSL", other))
    assert fix is not None and f"not trusted by INSIGHTS_KAFKA_SSL_CA_LOCATION ({other})" in fix
    unset = kafka_listener.diagnose(_kafka(port, "SASL_SSL"))
    assert unset is not None and "the system's CA store" in unset


def test_nothing_listening_is_left_to_the_usual_message() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        assert kafka_listener.diagnose(_kafka(port, "SSL")) is None


def test_a_tls_file_the_client_cannot_load_names_its_setting(tmp_path: Path) -> None:
    settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_ca_location=str(tmp_path / "missing.crt"))
    exc = KafkaException(KafkaError(KafkaError._INVALID_ARG,
                                    "Failed to create admin client: ssl.ca.location failed: error:05880020:x509"))
    found = operator_error(exc, settings)
    assert isinstance(found, ConfigError) and found.exit_code == 2
    assert str(found).startswith(f"INSIGHTS_KAFKA_SSL_CA_LOCATION ({tmp_path / 'missing.crt'}) cannot be loaded")


# --- `insights stack env` -------------------------------------------------------------


def test_stack_env_prints_the_plaintext_or_the_tls_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHTS_")}
    env["INSIGHTS_STACK_DIR"] = str(tmp_path)
    plain = run_cli("stack", "env", env=env)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [
        "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59092",
        "INSIGHTS_PG_DSN=postgresql://insights@127.0.0.1:55432/insights",
    ]
    over_tls = run_cli("stack", "env", "--kafka-tls", env=env)
    assert over_tls.returncode == 0, over_tls.stderr
    assert over_tls.stdout.splitlines() == [
        "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59094",
        "INSIGHTS_KAFKA_SECURITY_PROTOCOL=SSL",
        f"INSIGHTS_KAFKA_SSL_CA_LOCATION={tmp_path}/tls/ca.crt",
        "INSIGHTS_PG_DSN=postgresql://insights@127.0.0.1:55432/insights",
    ]
    sasl = run_cli("stack", "env", "--kafka-sasl", env={**env, "INSIGHTS_KAFKA_SASL_USERNAME": "alice",
                                                        "INSIGHTS_KAFKA_SASL_PASSWORD": "pw-never-printed"})
    assert sasl.returncode == 0, sasl.stderr
    assert sasl.stdout.splitlines() == [
        "INSIGHTS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59095",
        "INSIGHTS_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        "INSIGHTS_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
        f"INSIGHTS_KAFKA_SSL_CA_LOCATION={tmp_path}/tls/ca.crt",
        "INSIGHTS_KAFKA_SASL_USERNAME=alice",
        "INSIGHTS_PG_DSN=postgresql://insights@127.0.0.1:55432/insights",
    ]
    assert "pw-never-printed" not in sasl.stdout + sasl.stderr
    none = run_cli("stack", "env", "--kafka-tls", env={**env, "INSIGHTS_STACK_KAFKA_SSL_PORT": "0"})
    assert_one_line_error(none, 2, "no Kafka TLS listener", "INSIGHTS_STACK_KAFKA_SSL_PORT")
