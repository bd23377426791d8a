"""Incremental snapshots (DBLog watermarks) while the reader streams a table under continuous writes.

The table's rows exist before the slot, so only the incremental snapshot can bring them to
the topic. The reader (a real ``insights cdc run`` process) is SIGKILLed once mid-snapshot and
started again; the snapshot continues from its state in PostgreSQL. In the end the topic's
latest state per key equals the table (a checksum over every row), while the writes went on.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc import incremental as inc
from streams.cdc import slot as slots
from streams.cdc.lsn import parse_lsn
from streams.cdc.reader import CdcReader
from tests.cdc.conftest import EventReader, wait_for
from tests.fix_services import child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 6000
CHUNK = 50


def _q(schema: str, text: str) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(schema))


class _Writer(threading.Thread):
    """Updates, inserts and deletes on products, one small transaction every few ms, until stopped."""

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.schema = dsn, schema
        self.halt = threading.Event()
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.halt.is_set():
                    n = rng.randint(1, ROWS + 500)
                    roll = rng.random()
                    if roll < 0.6:
                        conn.execute(_q(self.schema, "UPDATE {s}.products SET title = %s, brand = %s WHERE asin = %s"),
                                     (f"t{self.count}", f"b{rng.randint(1, 9)}", f"P{n:05d}"))
                    elif roll < 0.85:
                        conn.execute(_q(self.schema, "INSERT INTO {s}.products (asin, title) VALUES (%s, %s) "
                                                     "ON CONFLICT (asin) DO UPDATE SET title = EXCLUDED.title"),
                                     (f"P{n:05d}", f"new{self.count}"))
                    else:
                        conn.execute(_q(self.schema, "DELETE FROM {s}.products WHERE asin = %s"), (f"P{n:05d}",))
                    self.count += 1
                    time.sleep(0.005)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def _reader(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "insights", "cdc", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _state(dsn: str, settings: Settings) -> tuple[str, int] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute(
                sql.SQL("SELECT status, rows_done FROM {} WHERE slot = %s AND table_name = 'products'")
                .format(sql.Identifier(settings.cdc.schema_name, inc.STATE)), (settings.cdc.slot_name,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return (row[0], int(row[1])) if row else None


def _state_locked(conn: psycopg.Connection[Any], settings: Settings) -> tuple[str, int]:
    row = conn.execute(
        sql.SQL("SELECT status, rows_done FROM {} WHERE slot = %s AND table_name = 'products' FOR UPDATE")
        .format(sql.Identifier(settings.cdc.schema_name, inc.STATE)), (settings.cdc.slot_name,)
    ).fetchone()
    return (row[0], int(row[1])) if row else ("", 0)


def _hold_state_after(conn: psycopg.Connection[Any], settings: Settings, rows: int) -> bool:
    """Lock the state row once ``rows`` are recorded (and keep the lock); otherwise let go and retry.

    Between two tries the reader records at most the chunks it confirmed in those few
    milliseconds, so with 120 chunks in all the lock is taken long before the last one."""
    try:
        status, done = _state_locked(conn, settings)
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return False
    if status == "running" and done >= rows:
        return True  # the transaction stays open: the reader blocks at its next UPDATE
    conn.rollback()
    assert status != "done", "the snapshot finished before it could be interrupted"
    return False


def _checksum(rows: dict[str, tuple[Any, ...]]) -> str:
    return hashlib.sha256(json.dumps(sorted(rows.items())).encode()).hexdigest()


def test_incremental_snapshot_under_writes_survives_sigkill_and_matches_the_table(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], pg_dsn: str
) -> None:
    pg.execute(_q(cdc_schema, "INSERT INTO {s}.products (asin, title, brand) "
                              "SELECT 'P' || lpad(g::text, 5, '0'), 'seed ' || g, 'b0' FROM generate_series(1, %s) g"),
               (ROWS,))
    # the slot position (and with it each chunk's state) is confirmed every 50 ms, so the
    # state row advances chunk by chunk and the test can stop it part-way (below)
    settings = cdc_settings.replace(cdc_incremental_chunk_size=CHUNK, cdc_tables=["products"],
                                    cdc_status_interval_s=0.05)
    CdcReader(settings).setup()  # the slot starts after the seed rows: only the snapshot brings them
    env = child_env(settings, INSIGHTS_METRICS_PORT="0")
    writer = _Writer(pg_dsn, cdc_schema)
    readers = [_reader(env)]
    snapshot: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: _active(pg, settings), timeout=60, what="the reader to stream")
        writer.start()
        snapshot = subprocess.Popen(
            [sys.executable, "-m", "insights", "cdc", "snapshot", "--incremental", "products"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # The reader records each confirmed chunk with an UPDATE of its state row. Holding that
        # row locked stops it there, so the kill lands mid-snapshot however fast this machine
        # is (a plain poll lost that race once: 3,000 rows were done before the kill).
        with psycopg.connect(pg_dsn) as holder:
            deadline = time.monotonic() + 120
            while not _hold_state_after(holder, settings, 2 * CHUNK):
                assert time.monotonic() < deadline, "timed out waiting for some chunks recorded"
                time.sleep(0.01)
            readers[0].send_signal(signal.SIGKILL)
            readers[0].wait(10)
            status, done_at_kill = _state_locked(holder, settings)
            assert status == "running"  # killed mid-snapshot
            assert 2 * CHUNK <= done_at_kill < ROWS
            holder.rollback()  # release: the killed reader's blocked UPDATE dies with its session
        readers.append(_reader(env))
        out, err = snapshot.communicate(timeout=240)
        assert snapshot.returncode == 0, err
        assert "incremental snapshot done: products" in out, out
        writer.halt.set()
        writer.join(10)
        assert writer.error is None, writer.error
        assert writer.count > 100
        # every change up to now confirmed: the topic is complete
        target = parse_lsn(pg.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
        wait_for(lambda: _confirmed(pg, settings) >= target, timeout=120, what="the reader to catch up")
        assert readers[1].poll() is None
    finally:
        writer.halt.set()
        for proc in [*readers, snapshot]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    events = EventReader(settings, "products")
    try:
        got = events.drain(quiet=3.0)
    finally:
        events.close()
    latest: dict[str, tuple[Any, ...]] = {}
    for key, _partition, value in got:  # one key lives on one partition: its events are in order
        asin = json.loads(key)["asin"]
        if value["op"] == "d":
            latest.pop(asin, None)
        else:
            after = value["after"]
            latest[asin] = (after["title"], after["brand"])
    table = {a: (t, b) for a, t, b in pg.execute(_q(cdc_schema, "SELECT asin, title, brand FROM {s}.products"))}
    reads = sum(1 for _, _, v in got if v["op"] == "r")
    assert reads >= len(table) - writer.count  # the seed rows came from the snapshot
    assert len(latest) == len(table)
    assert _checksum(latest) == _checksum(table)
    assert _state(pg_dsn, settings) == ("done", _state(pg_dsn, settings)[1])  # type: ignore[index]


def _active(pg: psycopg.Connection[Any], settings: Settings) -> bool:
    status = slots.slot_status(pg, settings.cdc.slot_name)
    return status is not None and status.active


def _confirmed(pg: psycopg.Connection[Any], settings: Settings) -> int:
    status = slots.slot_status(pg, settings.cdc.slot_name)
    return parse_lsn(status.confirmed_flush_lsn or "0/0") if status else 0
