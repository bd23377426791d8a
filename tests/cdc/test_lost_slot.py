"""A lost slot (wal_status = lost, SQLSTATE 55000) stops the reader with a typed error.

Runs on a private PostgreSQL (not the shared one): it lowers ``max_slot_wal_keep_size`` to
1MB and writes WAL past it until the server invalidates the slot, then checks that
``CdcReader.run``, its streaming path, ``insights cdc run`` and ``insights cdc status`` all
refuse to go on, naming the slot and the recovery section of docs/cdc.md.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from core.settings import Settings, load_settings
from insights.stack.postgres import LocalPostgres
from streams.cdc import slot as slots
from streams.cdc.errors import SlotLostError
from streams.cdc.reader import CdcReader
from tests.fix_services import child_env
from tests.private_pg import private_postgres

pytestmark = pytest.mark.integration

TABLE = "lost_rows"
RECOVERY_DOC = "docs/cdc.md#lost-slot-recovery"


@pytest.fixture(scope="module")
def private_pg() -> Iterator[LocalPostgres]:
    """A throw-away server whose slots may keep only 1MB of WAL."""
    with private_postgres("insights-pg-lost-") as server:
        with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 10
            while conn.execute("SHOW max_slot_wal_keep_size").fetchone() != ("1MB",):
                assert time.monotonic() < deadline, "max_slot_wal_keep_size was not reloaded"
                time.sleep(0.1)
        yield server


def _wal_status(conn: psycopg.Connection, slot: str) -> str | None:
    status = slots.slot_status(conn, slot)
    assert status is not None, f"slot {slot} disappeared"
    return status.wal_status


def _lose_slot(conn: psycopg.Connection, slot: str, timeout: float = 30.0) -> None:
    """Write ~5MB of WAL per round, switch segment and checkpoint, until the slot is lost."""
    deadline = time.monotonic() + timeout
    seen: list[str | None] = []
    while time.monotonic() < deadline:
        conn.execute(f"INSERT INTO {TABLE} (body) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 5000) g")
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        status = _wal_status(conn, slot)
        seen.append(status)
        if status == "lost":
            return
    raise AssertionError(f"slot {slot} never became lost; wal_status went {seen}")


def _in_thread(fn: Callable[[], object], timeout: float = 30.0) -> BaseException | None:
    """Run ``fn`` with a deadline (a reader that wrongly keeps waiting must not hang the suite)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout}s instead of stopping on the lost slot"
    return errors[0] if errors else None


def _env(settings: Settings) -> dict[str, str]:
    return child_env(settings, INSIGHTS_METRICS_PORT="0", INSIGHTS_CDC_TABLES=f'["{TABLE}"]')


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "insights", "cdc", *args],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lost_slot_stops_reader_and_status_fails(
    private_pg: LocalPostgres, kafka_bootstrap: str, topic_prefix: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = load_settings(
        pg_dsn=private_pg.dsn,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        metrics_port=0,
        cdc_slot_name=f"cdc_lost_{tag}",
        cdc_publication=f"cdc_lost_{tag}",
        cdc_schema="public",
        cdc_tables=[TABLE],
        cdc_status_interval_s=0.2,
        cdc_heartbeat_interval_s=1.0,
        cdc_standby_retry_s=0.5,
    )
    slot = settings.cdc.slot_name
    with slots.connect(settings.pg) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, body text NOT NULL)")
        assert slots.ensure_publication(conn, settings.cdc.publication, "public", (TABLE,))
        assert slots.ensure_slot(conn, slot)
        assert _wal_status(conn, slot) == "reserved"
        _lose_slot(conn, slot)

        # (1a) the reader as tests and `cdc run` drive it: run() ends with the typed error
        stop = threading.Event()
        notices: list[str] = []
        exc = _in_thread(lambda: CdcReader(settings, stop=stop).run(standby_notice=notices.append))
        assert isinstance(exc, SlotLostError), f"expected SlotLostError, got {exc!r}"
        assert exc.slot == slot and exc.exit_code == 3
        assert repr(slot) in str(exc) and RECOVERY_DOC in str(exc)
        assert not notices  # a lost slot is not "busy": no hot-standby waiting

        # (1b) the streaming path on its own (a slot lost while the reader was already set up):
        # START_REPLICATION fails with SQLSTATE 55000 and is mapped to the same error
        reader = CdcReader(settings)
        exc = _in_thread(reader._stream)
        assert isinstance(exc, SlotLostError), f"expected SlotLostError from the stream, got {exc!r}"
        assert repr(slot) in str(exc) and RECOVERY_DOC in str(exc)

    # (1c) the real process: exits non-zero (3) with a one-line error naming slot and doc
    run = _cli(settings, "run")
    assert run.returncode == 3, f"cdc run exited {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    flat = " ".join(run.stderr.split())
    assert "insights: error:" in flat and repr(slot) in flat and "is lost" in flat and RECOVERY_DOC in flat

    # (2) `insights cdc status` shows the lost slot and exits non-zero
    status = _cli(settings, "status")
    assert status.returncode != 0, f"cdc status exited 0\nstdout: {status.stdout}\nstderr: {status.stderr}"
    assert "lost" in status.stdout, status.stdout
    assert "lost" in status.stderr and RECOVERY_DOC in " ".join(status.stderr.split()), status.stderr
    status_json = _cli(settings, "status", "--json")
    assert status_json.returncode != 0
    assert '"wal_status": "lost"' in status_json.stdout, status_json.stdout
