"""The reader heals itself: a terminated walsender, a PostgreSQL restart and a broker restart
are ridden through without a supervisor, every change delivered (duplicates only with the
same LSN), the loss and the recovery logged once each; a permanent error still ends it.

``pg_terminate_backend`` runs on the shared stack (a uuid slot and publication); the
restarts run on a PRIVATE PostgreSQL / Kafka started in a temp dir on free ports.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from psycopg import sql

from core.settings import Settings, load_settings
from insights.stack.kafka import LocalKafka
from insights.stack.postgres import LocalPostgres
from streams.cdc import slot as slots
from streams.cdc.errors import (
    CdcError, DecodeError, RegistryRefusedError, SlotInUseError, SlotLostError, SlotMissingError,
)
from streams.cdc.healing import stream_lost
from streams.cdc.reader import CdcReader
from streams.cdc.transport import AckTracker, ReplicationError
from streams.serde.errors import RegistryUnavailableError
from tests.cdc.conftest import DDL, TABLES, EventReader, running_reader, wait_for
from tests.consumers.pg_cluster import free_port
from tests.private_pg import private_postgres
from tests.fix_services import child_env

HEALING = {"cdc_reconnect_max_s": 1.0, "cdc_heartbeat_interval_s": 1.0, "cdc_status_interval_s": 0.2,
           "cdc_standby_retry_s": 0.5}


# --- which failures lose the stream (no services) -------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        ReplicationError("terminating connection due to administrator command", "57P01"),
        ReplicationError("replication connection lost: server closed the connection unexpectedly"),
        ReplicationError("no message from the server for 61 s: connection lost"),
        CdcError("cannot open a replication connection: connection to server at \"127.0.0.1\", port 5 failed: "
                 "Connection refused"),
        CdcError("cannot open a replication connection: FATAL: the database system is starting up"),
        KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)),
        # typed events: waited out where met; anywhere else, starting again from the confirmed position is safe
        RegistryUnavailableError("schema registry unreachable: [Errno 111] Connection refused"),
    ],
)
def test_transient_failures_lose_the_stream_for_a_while(exc: BaseException) -> None:
    assert stream_lost(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        SlotLostError("s"),
        SlotMissingError("s", "p"),
        DecodeError("unexpected replication message type 'x'"),
        ReplicationError('publication "nope" does not exist', "42704"),
        CdcError("cannot open a replication connection: connection to server at \"h\", port 5 failed: "
                 "FATAL:  password authentication failed for user \"x\""),
        CdcError("Kafka did not accept a change event: Broker: Message size too large"),
        ValueError("a bug"),
        RegistryRefusedError(401, "Unauthorized: connection refused by policy"),  # an answer, whatever its words
    ],
)
def test_permanent_failures_end_the_reader(exc: BaseException) -> None:
    assert stream_lost(exc) is False


def test_resume_skips_committed_transactions_and_abandons_the_open_one() -> None:
    tracker = AckTracker(confirmed=100)
    first = tracker.begin()
    tracker.sent(first, 2)
    tracker.commit(first, 200)  # committed, not yet acknowledged
    second = tracker.begin()
    tracker.sent(second, 3)  # open when the stream was lost
    assert tracker.resume() == 200  # the new stream starts past the first, the second comes again
    assert tracker.confirmed == 100
    tracker.acked(second, 3)  # its old copies are acknowledged: they confirm nothing
    assert tracker.confirmed == 100
    tracker.acked(first, 2)
    assert tracker.confirmed == 200
    again = tracker.begin()  # the second, sent again by the new stream
    tracker.sent(again, 3)
    tracker.commit(again, 300)
    tracker.acked(again, 3)
    assert tracker.confirmed == 300 and not tracker.in_flight_any


def _assert_every_change_once(events: list[tuple[bytes | None, int, dict[str, Any]]], total: int) -> None:
    lsns: dict[bytes | None, set[tuple[int, int]]] = {}
    for key, _, value in events:
        lsns.setdefault(key, set()).add((value["source"]["lsn"], value["source"]["commit_lsn"]))
    assert len(lsns) == total, f"{len(lsns)} distinct keys, expected {total}"
    assert all(len(v) == 1 for v in lsns.values()), "a duplicate carried a different LSN"


def _insert(pg: psycopg.Connection[Any], schema: str, first: int, last: int) -> int:
    pg.execute(
        sql.SQL("INSERT INTO {}.products (asin, title) SELECT 'H' || g, 'row ' || g FROM generate_series(%s::int, %s::int) g")
        .format(sql.Identifier(schema)),
        (first, last),
    )
    return last - first + 1


def _walsender(pg: psycopg.Connection[Any], slot: str) -> int | None:
    row = pg.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return row[0] if row else None


# --- pg_terminate_backend (shared stack) -------------------------------------------------------------
@pytest.mark.integration
def test_reader_survives_pg_terminate_backend_of_its_walsender(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = cdc_settings.replace(**HEALING)
    caplog.set_level(logging.INFO, logger="streams.cdc")
    total = 0
    with running_reader(settings) as reader:
        wait_for(lambda: _walsender(pg, settings.cdc.slot_name) is not None, what="the reader to stream")
        total += _insert(pg, cdc_schema, 1, 300)
        for round_ in range(3):  # three times, changes committed while it is away each time
            pid = _walsender(pg, settings.cdc.slot_name)
            assert pid is not None
            pg.execute("SELECT pg_terminate_backend(%s)", (pid,))
            base = 1000 * (round_ + 1)
            total += _insert(pg, cdc_schema, base, base + 199)
            wait_for(lambda: _walsender(pg, settings.cdc.slot_name) not in (None, pid), timeout=60,
                     what="the reader to reconnect")
        total += _insert(pg, cdc_schema, 9000, 9099)
        got = events("products").read_distinct_keys(total, timeout=90)
        _assert_every_change_once(got, total)
        assert reader.outage.lost_total == 3
    lost = [r for r in caplog.records if r.getMessage().startswith("lost the replication stream")]
    regained = [r for r in caplog.records if r.getMessage().startswith("regained the replication stream")]
    assert len(lost) == 3 and len(regained) == 3, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.WARNING for r in lost)
    assert "57P01" in lost[0].getMessage()


@pytest.mark.integration
def test_missing_publication_is_permanent_and_ends_the_reader(cdc_settings: Settings, pg_dsn: str) -> None:
    reader = CdcReader(cdc_settings)
    reader.setup()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(cdc_settings.cdc.publication)))
        conn.execute(sql.SQL("CREATE TABLE {}.trigger_change (id int)").format(sql.Identifier(cdc_settings.cdc.schema_name)))
        conn.execute(sql.SQL("INSERT INTO {}.trigger_change VALUES (1)").format(sql.Identifier(cdc_settings.cdc.schema_name)))
    reader._set_up = True  # setup would re-create it: start as a reader that had streamed before
    done: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(reader, done), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "a missing publication was retried"
    assert done and isinstance(done[0], ReplicationError) and done[0].sqlstate == "42704", done
    assert reader.outage.lost_total == 0


def _capture(reader: CdcReader, into: list[BaseException]) -> None:
    try:
        reader.run()
    except BaseException as exc:  # noqa: BLE001 - surfaced to the test thread
        into.append(exc)


# --- PostgreSQL restart (private server, the reader as a real process) ------------------------------
@pytest.fixture(scope="module")
def private_pg() -> Iterator[LocalPostgres]:
    with private_postgres("insights-pg-heal-") as server:
        yield server


@pytest.mark.integration
@pytest.mark.slow
def test_cdc_run_survives_a_postgresql_restart(
    private_pg: LocalPostgres, settings: Settings, tmp_path: Path
) -> None:
    schema = f"heal_{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:10]
    run_settings = settings.replace(
        pg_dsn=private_pg.dsn, cdc_schema=schema, cdc_tables=list(TABLES),
        cdc_slot_name=f"heal_{tag}", cdc_publication=f"heal_{tag}", **HEALING,
    )
    with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(DDL.format(schema=sql.Identifier(schema).as_string(conn)))
    CdcReader(run_settings).setup()
    log_path = tmp_path / "reader.log"
    env = child_env(run_settings, INSIGHTS_METRICS_PORT="0")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "insights", "cdc", "run"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    reader_events = EventReader(run_settings, "products")
    try:
        with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
            wait_for(lambda: _walsender(conn, run_settings.cdc.slot_name) is not None, timeout=60,
                     what="the reader to stream")
            total = _insert(conn, schema, 1, 500)
        private_pg.restart()  # every connection cut, the reader's included
        with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
            total += _insert(conn, schema, 1001, 1500)
            wait_for(lambda: _walsender(conn, run_settings.cdc.slot_name) is not None, timeout=60,
                     what="the reader to reconnect")
            total += _insert(conn, schema, 2001, 2100)
        got = reader_events.read_distinct_keys(total, timeout=90)
        _assert_every_change_once(got, total)
        assert proc.poll() is None, "the reader exited on a PostgreSQL restart"
        proc.terminate()
        assert proc.wait(60) == 0
    except BaseException:
        print(log_path.read_text(errors="replace"))  # shown by pytest with the failure
        raise
    finally:
        reader_events.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
            wait_for(lambda: _drop(conn, run_settings), timeout=20, what="the slot to be dropped")
    text = log_path.read_text(errors="replace")
    assert text.count("lost the replication stream") == 1, text
    assert text.count("regained the replication stream") == 1, text


def _drop(conn: psycopg.Connection[Any], settings: Settings) -> bool:
    try:
        slots.drop(conn, settings.cdc.slot_name, settings.cdc.publication)
        return True
    except CdcError:
        return False


# --- broker restart (private Kafka) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def private_kafka() -> Iterator[LocalKafka]:
    root = Path(tempfile.mkdtemp(prefix="insights-kafka-heal-"))
    kafka = LocalKafka(load_settings(stack_dir=root, stack_kafka_port=free_port(),
                                     stack_kafka_controller_port=free_port()))
    try:
        kafka.up(wait=180)
        yield kafka
    finally:
        try:
            kafka.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.slow
def test_reader_pauses_through_a_broker_restart_and_delivers_everything(
    private_kafka: LocalKafka, cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a small queue, so the outage fills it: the reader must pause reading, not fail
    settings = cdc_settings.replace(
        kafka_bootstrap_servers=private_kafka.bootstrap,
        kafka_overrides={"queue.buffering.max.messages": "200"},
        **HEALING,
    )
    caplog.set_level(logging.INFO, logger="streams.cdc")
    with running_reader(settings) as reader:
        wait_for(lambda: _walsender(pg, settings.cdc.slot_name) is not None, what="the reader to stream")
        total = _insert(pg, cdc_schema, 1, 300)
        wait_for(lambda: reader.tracker.in_flight == 0 and reader.delivered >= 300, timeout=60,
                 what="the first rows delivered")
        private_kafka.down()
        for batch in range(10):  # 2,000 changes while the broker is away: ten times the queue
            total += _insert(pg, cdc_schema, 1000 + batch * 200, 1199 + batch * 200)
        wait_for(lambda: reader._paused_since is not None, timeout=30, what="the reader to pause")
        time.sleep(6)  # long enough to say so
        assert reader._paused_since is not None
        private_kafka.up(wait=180)
        wait_for(lambda: reader.delivered >= total, timeout=120, what="every change delivered")
        got = EventReader(settings, "products")
        try:
            _assert_every_change_once(got.read_distinct_keys(total, timeout=60), total)
        finally:
            got.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("reading paused" in m for m in messages) == 1, messages
    assert sum("reading resumed" in m for m in messages) == 1, messages


# --- a network cut: the replication connection's packets dropped, its socket left open --------------
@pytest.mark.integration
def test_reader_survives_a_network_cut(
    cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], events: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(cdc_settings.pg.dsn)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tests.cdc.cut_proxy", parts.get("host") or "127.0.0.1", str(parts.get("port") or 5432)],
        stdout=subprocess.PIPE, text=True,
        # over TLS the proxy cannot read the startup packet: it asks the server for its walsenders
        env={**os.environ, "CUT_PROXY_DSN": cdc_settings.pg.conninfo()},
    )
    assert proxy.stdout is not None
    port = int(proxy.stdout.readline())
    settings = cdc_settings.replace(
        pg_dsn=make_conninfo(**{**parts, "host": "127.0.0.1", "port": str(port)}),
        cdc_stream_timeout_s=3.0, cdc_heartbeat_interval_s=30.0, **{k: v for k, v in HEALING.items()
                                                                    if k != "cdc_heartbeat_interval_s"},
    )
    caplog.set_level(logging.INFO, logger="streams.cdc")
    try:
        with running_reader(settings) as reader:
            wait_for(lambda: _walsender(pg, settings.cdc.slot_name) is not None, what="the reader to stream")
            total = _insert(pg, cdc_schema, 1, 200)
            wait_for(lambda: reader.delivered >= 200, what="the first rows")
            proxy.send_signal(signal.SIGUSR1)
            total += _insert(pg, cdc_schema, 1000, 1199)  # committed while the network is down
            wait_for(lambda: reader.outage.ongoing, timeout=30, what="the reader to notice the cut")
            proxy.send_signal(signal.SIGUSR2)
            # the server's side of the cut connection lingers until wal_sender_timeout; end it
            pg.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
                       (settings.cdc.slot_name,))
            wait_for(lambda: not reader.outage.ongoing, timeout=60, what="the reader to reconnect")
            total += _insert(pg, cdc_schema, 2000, 2099)
            _assert_every_change_once(events("products").read_distinct_keys(total, timeout=60), total)
    finally:
        proxy.kill()
        proxy.wait(10)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("lost the replication stream") for m in messages) == 1, messages
    assert any("no message from the server" in m for m in messages), messages
    assert sum(m.startswith("regained the replication stream") for m in messages) == 1, messages
