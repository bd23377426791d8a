"""What a Kafka listener speaks, asked with a bare TLS handshake (and, for SASL, one login):
the fix for a client that got no answer because it and the listener disagree.

librdkafka reports these mistakes the same way, after its timeout, as "Broker transport
failure": a PLAINTEXT client at a TLS listener (the broker closes the connection on the
first bytes), a TLS client at a PLAINTEXT listener (no handshake), a TLS client that does
not trust the broker's certificate, and a SASL login the broker refuses (the reasons are
only in its log lines and error callbacks). One handshake from Python, or one short-lived
client that listens to its error callback, tells them apart in about a second, so the
failure line can name the setting to change instead of "start Kafka".
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

from core.settings import KafkaSettings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def _first_server(bootstrap: str) -> tuple[str, int] | None:
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "localhost", int(port)


def _speaks_tls(host: str, port: int, timeout: float) -> bool | None:
    """True: a TLS handshake completes; False: something answers TCP but not TLS; None: nothing answers."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # only the protocol is asked here, trust is asked by _untrusted
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return True
    except (ssl.SSLError, OSError):  # a Kafka PLAINTEXT listener drops a ClientHello (an absurd request size)
        return False
    finally:
        sock.close()


def _untrusted(host: str, port: int, ca: str | None, timeout: float) -> str | None:
    """Why the certificate at host:port is not trusted with ``ca`` (None: trusted, or no answer).

    Checked like librdkafka does by default (``ssl.endpoint.identification.algorithm=https``):
    the chain against the CA file (the system's store when unset) and the name or IP.
    """
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot read {ca}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_message or str(exc)
    except (ssl.SSLError, OSError):
        return None


def _login_refused(kafka: KafkaSettings, timeout: float) -> str | None:
    """The broker's refusal of this client's SASL login, as its error callback reports it
    (within a second, where a request would wait for its timeout); None: none seen."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    refusals: list[str] = []

    def on_error(error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            refusals.append(error.str())

    quiet = logging.getLogger("insights.cli.kafka_listener.probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    admin = AdminClient({**kafka.client_config(), "error_cb": on_error, "logger": quiet})
    deadline = time.monotonic() + timeout
    while not refusals and time.monotonic() < deadline:
        admin.poll(0.1)
    return refusals[0] if refusals else None


def diagnose(kafka: KafkaSettings, timeout: float = 3.0) -> str | None:
    """The fix, when the first bootstrap server and ``kafka``'s TLS settings disagree; else None."""
    server = _first_server(kafka.bootstrap_servers)
    if server is None:
        return None
    host, port = server
    where = f"{host}:{port}"
    speaks_tls = _speaks_tls(host, port, timeout)
    if speaks_tls is None:
        return None
    tls_client = kafka.security_protocol in TLS_PROTOCOLS
    if speaks_tls and not tls_client:
        return (
            f"{where} is a TLS listener and INSIGHTS_KAFKA_SECURITY_PROTOCOL is {kafka.security_protocol}: "
            "set it to SSL and INSIGHTS_KAFKA_SSL_CA_LOCATION to the listener's CA "
            "(the local stack's: `insights stack env --kafka-tls`), or use the PLAINTEXT port"
        )
    if tls_client and not speaks_tls:
        return (
            f"{where} does not speak TLS and INSIGHTS_KAFKA_SECURITY_PROTOCOL is {kafka.security_protocol}: "
            "point INSIGHTS_KAFKA_BOOTSTRAP_SERVERS at the TLS listener (`insights stack env --kafka-tls`) "
            "or set INSIGHTS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
        )
    if tls_client:
        ca = str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        why = _untrusted(host, port, ca, timeout)
        if why is not None:
            trusted = f"INSIGHTS_KAFKA_SSL_CA_LOCATION ({ca})" if ca else "the system's CA store (INSIGHTS_KAFKA_SSL_CA_LOCATION unset)"
            return (
                f"the certificate of {where} is not trusted by {trusted}: {why}: set INSIGHTS_KAFKA_SSL_CA_LOCATION "
                "to the CA that signed it (the local stack's: `insights stack env --kafka-tls`)"
            )
    if kafka.security_protocol.startswith("SASL_"):
        refused = _login_refused(kafka, timeout)
        if refused is not None:
            return (
                f"{refused}: fix INSIGHTS_KAFKA_SASL_USERNAME / INSIGHTS_KAFKA_SASL_PASSWORD / INSIGHTS_KAFKA_SASL_MECHANISM "
                "(the local stack registers the user of these settings at `insights stack up`)"
            )
    return None
