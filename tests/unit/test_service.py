"""The service frame's parts on their own: port fallback, the endpoint, JSON lines, signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from prometheus_client import Counter
from pydantic import SecretStr

from core.settings import ServiceSettings
from streams.service.health import Health
from streams.service.http import PORT_ATTEMPTS, MetricsServer, candidate_ports
from streams.service.logs import JsonFormatter
from streams.service.registry import process_registry
from streams.service.runner import Service

LOCAL = "127.0.0.1"


def _listening(port: int) -> socket.socket:
    """Hold ``port`` the way another process's endpoint would (bound and listening)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does: it must not help
    sock.bind((LOCAL, port))
    sock.listen()
    return sock


def _free_run(length: int) -> int:
    """The first port of ``length`` consecutive ports that are free right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((LOCAL, 0))
            base = probe.getsockname()[1]
        if base + length >= 65535:
            continue
        free = True
        for port in range(base, base + length):
            with socket.socket() as sock:
                try:
                    sock.bind((LOCAL, port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise AssertionError("no run of free ports found")


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{LOCAL}:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_candidate_ports_are_the_requested_the_next_ones_then_any() -> None:
    assert list(candidate_ports(9464, 3)) == [9464, 9465, 9466, 0]
    assert list(candidate_ports(65534, 5)) == [65534, 65535, 0]
    assert list(candidate_ports(0)) == [0]


def test_a_taken_port_moves_to_the_next_free_one_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    base = _free_run(3)
    with ExitStack() as held:
        held.enter_context(_listening(base))
        held.enter_context(_listening(base + 1))
        with caplog.at_level(logging.INFO, logger="insights.service"):
            server = MetricsServer(process_registry(), Health(), base, host=LOCAL).start()
        try:
            assert server.port == base + 2
            assert _get(base + 2, "/healthz")[0] == 200
        finally:
            server.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert getattr(warnings[0], "requested_port") == base and getattr(warnings[0], "port") == base + 2
    up = [r for r in caplog.records if r.getMessage() == "metrics and health endpoint up"]
    assert [getattr(r, "port") for r in up] == [base + 2]


def test_every_candidate_taken_still_serves_on_some_free_port() -> None:
    base = _free_run(PORT_ATTEMPTS)
    with ExitStack() as held:
        for port in range(base, base + PORT_ATTEMPTS):
            held.enter_context(_listening(port))
        server = MetricsServer(process_registry(), Health(), base, host=LOCAL).start()
        try:
            assert server.port is not None and not base <= server.port < base + PORT_ATTEMPTS
            assert _get(server.port, "/metrics")[0] == 200
        finally:
            server.stop()


def test_an_unbindable_host_means_no_endpoint_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this host
    with caplog.at_level(logging.WARNING, logger="insights.service"):
        server = MetricsServer(process_registry(), Health(), 9464, host="192.0.2.1").start()
    assert server.port is None
    server.stop()
    assert any("no metrics/health endpoint" in r.getMessage() for r in caplog.records)


def test_metrics_carry_process_metrics_and_healthz_is_the_health_report_as_json() -> None:
    registry = process_registry()
    Counter("insights_test_things", "things", registry=registry).inc(3)
    health = Health(stuck_after=None, unreachable_after=0.2)
    server = MetricsServer(registry, health, 0, host=LOCAL).start()
    assert server.port is not None
    try:
        status, body = _get(server.port, "/metrics")
        text = body.decode()
        assert status == 200
        assert "insights_test_things_total 3.0" in text
        assert "process_cpu_seconds_total" in text and "python_info" in text
        status, body = _get(server.port, "/healthz")
        assert (status, json.loads(body)) == (200, {"healthy": True, "reasons": []})

        health.failing("postgres", "connection refused")
        assert _get(server.port, "/healthz")[0] == 200  # not for longer than the threshold yet
        time.sleep(0.3)
        status, body = _get(server.port, "/healthz")
        report = json.loads(body)
        assert status == 503 and report["healthy"] is False
        assert report["reasons"][0].startswith("postgres unreachable for") and "connection refused" in report["reasons"][0]
        health.ok("postgres")
        assert _get(server.port, "/healthz")[0] == 200
        assert _get(server.port, "/nothing")[0] == 404
    finally:
        server.stop()


def _record(text: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            info = sys.exc_info()
    record = logging.LogRecord("insights.test", logging.WARNING, __file__, 1, text, args, info)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_one_object_per_line_with_fields_and_no_secret() -> None:
    line = JsonFormatter().format(
        _record("batch\nof %d", 5, exc=True, topic="t", offsets={"t[0]": 7}, password=SecretStr("s3cr3t"), level="shadow")
    )
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "batch\nof 5"
    assert doc["level"] == "warning"  # an extra named like a base key does not hide it
    assert doc["logger"] == "insights.test"
    assert doc["topic"] == "t" and doc["offsets"] == {"t[0]": 7}
    assert "s3cr3t" not in line and doc["password"] == "**********"
    assert "ValueError: boom" in doc["exc"]
    assert doc["ts"].endswith("+00:00")


def test_json_formatter_survives_a_bad_format_string() -> None:
    doc = json.loads(JsonFormatter().format(_record("%d items", "not a number")))
    assert "items" in doc["msg"]


CHILD = textwrap.dedent(
    """
    import logging, sys, threading, time, warnings
    from confluent_kafka import Consumer
    from core.settings import KafkaSettings
    from streams.kafka import consumer_config
    from streams.service.logs import configure_logging

    configure_logging("INFO", as_json=True, fields={"service": "child"})
    logging.getLogger("x").info("multi\\nline", extra={"n": 1})
    logging.getLogger("x").info("%d bad", "format")
    warnings.warn("a python warning")
    consumer = Consumer(consumer_config(KafkaSettings(bootstrap_servers=sys.argv[1]), "g"))
    consumer.subscribe(["nothing"])
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        consumer.poll(0.1)
    consumer.close()
    thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
    thread.start()
    thread.join()
    raise RuntimeError("uncaught in main")
    """
)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])  # closed again on exit: connections are refused


def test_json_mode_routes_librdkafka_warnings_and_uncaught_exceptions_into_json_lines() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, f"{LOCAL}:{_dead_port()}"],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    docs = []
    for line in lines:
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line on stderr: {line!r}") from None
    assert all(isinstance(d, dict) and d.get("service") == "child" for d in docs)
    by_logger = {d["logger"] for d in docs}
    assert "librdkafka" in by_logger, by_logger  # e.g. FAIL ... Connection refused
    assert "py.warnings" in by_logger
    assert any("ZeroDivisionError" in d.get("exc", "") and d.get("thread_name") == "doomed" for d in docs)
    assert any("RuntimeError: uncaught in main" in d.get("exc", "") for d in docs)
    assert any(d["msg"] == "multi\nline" and d["n"] == 1 for d in docs)


@pytest.fixture
def process_logging() -> Iterator[None]:
    """The frame configures the process's logging; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (sys.excepthook, threading.excepthook)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks


@pytest.mark.usefixtures("process_logging")
def test_service_frame_sets_stop_on_sigterm_and_takes_itself_down() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    frame = Service("unit", ServiceSettings(metrics_port=0), stuck_after=None)
    with frame:
        assert frame.port is None  # 0 = no endpoint
        os.kill(os.getpid(), signal.SIGTERM)
        assert frame.stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.usefixtures("process_logging")
def test_service_frame_marks_an_escaping_error_fatal() -> None:
    frame = Service("unit", ServiceSettings(metrics_port=0), stuck_after=None)
    with pytest.raises(RuntimeError), frame:
        raise RuntimeError("broken")
    report = frame.health.report()
    assert not report.healthy and "broken" in report.reasons[0]


@pytest.mark.usefixtures("process_logging")
def test_service_frame_in_a_thread_installs_no_signal_handler() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []

    def run() -> None:
        with Service("unit", ServiceSettings(metrics_port=0), stuck_after=None):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert seen == [previous]
