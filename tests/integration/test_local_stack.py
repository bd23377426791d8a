"""The local stack's lifecycle, on a private instance (own directory, own free ports)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import StackError
from core.settings import Settings, load_settings
from insights.stack import LocalStack
from insights.stack.kafka import LocalKafka, encode_uuid

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_settings() -> Iterator[Settings]:
    # not pytest's tmp_path: it is private to root, and PostgreSQL runs as another user
    root = Path(tempfile.mkdtemp(prefix="insights-stack-"))
    root.chmod(0o755)
    try:
        yield load_settings(
            stack_dir=root,
            stack_pg_port=free_port(),
            stack_kafka_port=free_port(),
            stack_kafka_controller_port=free_port(),
            stack_pgbouncer_port=free_port(),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def processes_under(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(root).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_up_twice_is_a_no_op_and_down_leaves_no_process(private_settings):
    stack = LocalStack(private_settings)
    try:
        first = stack.up()
        assert {k: first[k] for k in ("postgres", "kafka")} == {
            "postgres": "initialised and started", "kafka": "formatted and started"
        }
        # a new cluster archives its WAL through pgBackRest from the start (docs/runbooks.md#backups)
        assert first["backups"].startswith("WAL archive and backups by pgBackRest"), first
        assert all(s.answers for s in stack.status())
        pids_before = {s.name: s.pid for s in stack.status()}

        second = stack.up()
        assert {k: second[k] for k in ("postgres", "kafka")} == {"postgres": "already running", "kafka": "already running"}
        assert {s.name: s.pid for s in stack.status()} == pids_before
    finally:
        stack.down()
    assert processes_under(private_settings.stack.dir) == []
    assert not any(s.answers for s in stack.status())


def stack_status_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "insights", "stack", "status"],
        env={**os.environ, **settings.to_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_lists_pgbouncer_while_it_runs(private_settings):
    stack = LocalStack(private_settings)
    try:
        first = stack.up()
        assert {k: first[k] for k in ("postgres", "kafka")} == {
            "postgres": "initialised and started", "kafka": "formatted and started"
        }
        # started without PgBouncer: no row for it, and the status is not failed by it
        assert [s.name for s in stack.status()] == ["postgres", "kafka"]

        third = stack.up(with_pgbouncer=True)
        assert {k: third[k] for k in ("postgres", "kafka", "pgbouncer")} == {
            "postgres": "already running", "kafka": "already running", "pgbouncer": "started"
        }
        rows = {s.name: s for s in stack.status()}
        assert list(rows) == ["postgres", "kafka", "pgbouncer"]
        assert rows["pgbouncer"].answers and rows["pgbouncer"].pid
        assert str(private_settings.stack.pgbouncer_port) in rows["pgbouncer"].address

        shown = stack_status_cli(private_settings)
        assert shown.returncode == 0, shown.stderr
        line = next(l for l in shown.stdout.splitlines() if "pgbouncer" in l)
        assert str(rows["pgbouncer"].pid) in line and "yes" in line
        assert str(private_settings.stack.pgbouncer_port) in line
    finally:
        stack.down()
    assert processes_under(private_settings.stack.dir) == []
    assert [s.name for s in stack.status()] == ["postgres", "kafka"]


def test_kafka_formats_with_a_cluster_id_that_starts_with_a_dash(private_settings):
    # Kafka's real format tool on the command line _format builds: with "-t <id>" this
    # failed with "argument --cluster-id/-t: expected one argument" (1 start in 64)
    kafka = LocalKafka(private_settings)
    kafka.fetch_jars()
    kafka.write_config()
    cluster_id = encode_uuid(bytes([0xF8]) + bytes(range(1, 16)))
    assert cluster_id.startswith("-")
    assert kafka._format(cluster_id) is True
    meta = (kafka.root / "data" / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}" in meta.splitlines()
    assert kafka._format() is False  # formatted once, kept on later starts


def test_taken_port_is_one_clear_error(private_settings):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", private_settings.stack.kafka_port))
        blocker.listen()
        with pytest.raises(StackError) as info:
            LocalKafka(private_settings).up()
    message = str(info.value)
    assert str(private_settings.stack.kafka_port) in message
    assert "INSIGHTS_STACK_KAFKA_PORT" in message


def test_missing_java_says_what_to_install(private_settings, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    kafka = LocalKafka(private_settings)
    with pytest.raises(StackError, match="install a Java 17 runtime"):
        kafka._java()
    assert os.environ["PATH"] == "/nonexistent"
