"""Fixtures for the status tests: every declared topic under the test's prefix, a CDC slot, the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from streams.admin import ensure_topics
from streams.topics import declared_topics
from tests.fix_services import child_env


@pytest.fixture
def all_topics(settings: Settings) -> Iterator[list[str]]:
    """Every topic ``insights topics create`` makes, under this test's prefix (deleted after)."""
    specs = declared_topics(settings)
    ensure_topics(settings, specs)
    yield [s.name for s in specs]
    admin = AdminClient(settings.kafka.client_config())
    # the consumers' and tests' own extra topics (the summaries DLQs…) share the prefix
    names = [n for n in admin.list_topics(timeout=30).topics if n.startswith(settings.kafka.topic_prefix + ".")]
    for future in admin.delete_topics(names).values():
        try:
            future.result(timeout=30)
        except Exception:
            pass


@pytest.fixture
def slot_settings(settings: Settings, pg_dsn: str) -> Iterator[Settings]:
    """Settings whose CDC slot exists (idle: no reader), dropped before the database is."""
    name = f"status_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    try:
        yield settings.replace(cdc_slot_name=name)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for _ in range(50):
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.2)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(settings: Settings, *args: str, timeout: float = 60, **env: str) -> Run:
    """``insights …`` as a child process whose stdout is a pipe (never a terminal)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "insights", *args],
        env=child_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
