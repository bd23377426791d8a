"""Protocol v2 streaming of large in-progress transactions (INSIGHTS_CDC_STREAMING).

* the spool (no services): an event encoded with the placeholder and spliced at the commit is
  the same bytes as the event encoded with its commit; a subtransaction's rollback cuts off what
  it and its children spooled;
* on the real server with ``logical_decoding_work_mem=64kB`` (the replication session's):
  a 200k-row transaction arrives once and complete, after being streamed; a rolled-back
  streamed transaction publishes nothing; ``ROLLBACK TO SAVEPOINT`` inside a streamed
  transaction drops only those rows; SIGKILL of ``insights cdc run`` mid-stream, then a new one,
  delivers every change (duplicates only with the same LSN).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from streams.cdc.envelope import RelationCodec, change_bodies, source_txn
from streams.cdc.pgoutput import Column, Insert, Relation
from streams.cdc.reader import CdcReader
from streams.cdc.spool import TxnSpool, placeholder, splice
from streams.cdc.values import ValueConverter
from tests.cdc.conftest import TABLES, EventReader, running_reader, wait_for
from tests.fix_services import child_env

RELATION = Relation(7, "public", "big", "d", (Column("id", 23, -1, True), Column("payload", 25, -1, False),
                                              Column("at", 1184, -1, False)))


# --- the spool (no services) ------------------------------------------------------------------------
@pytest.mark.parametrize("xid", [1, 700, 2**31 + 5])
def test_an_event_spliced_at_the_commit_is_the_event_encoded_with_it(xid: int) -> None:
    codec = RelationCodec(RELATION, ValueConverter())
    message = Insert(7, [b"42", "é payload".encode(), b"2024-01-02 03:04:05.5+00"])
    commit_lsn, commit_time = 2**40 + 17, 1_700_000_000_123_456
    txn = source_txn(commit_lsn, xid, commit_time)
    [(_, key, early)] = change_bodies(codec, message, 12345, placeholder(xid))
    [(_, key2, final)] = change_bodies(codec, message, 12345, txn)
    tail = len(codec.relation_tail)
    assert key == key2 and splice(early, tail, xid, txn) == final


def test_a_rolled_back_subtransaction_is_cut_off_with_its_children(tmp_path: Path) -> None:
    spool = TxnSpool(10, "slot", str(tmp_path))
    for subxid, n in [(10, 1), (10, 2), (11, 3), (12, 4), (11, 5), (13, 6)]:
        spool.append(subxid, RELATION, "c", str(n).encode(), b"v%d" % n, 3)
    assert spool.abort_subtransaction(13) == 1  # the last one alone
    assert spool.abort_subtransaction(99) == 0  # never streamed
    assert spool.abort_subtransaction(11) == 3  # 3, its child 12's 4, and 5
    spool.append(14, RELATION, "c", b"7", b"v7", 3)
    assert [e.key for e in spool.events()] == [b"1", b"2", b"7"]
    path = spool.path
    spool.close()
    assert not os.path.exists(path)


# --- on the real server -----------------------------------------------------------------------------
BIG = 200_000


@pytest.fixture
def streaming(cdc_settings: Settings, cdc_schema: str, pg: psycopg.Connection[Any], tmp_path: Path) -> Settings:
    pg.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, payload text)").format(sql.Identifier(cdc_schema, "big")))
    return cdc_settings.replace(cdc_tables=[*TABLES, "big"], cdc_streaming=True, cdc_logical_decoding_work_mem="64kB",
                                cdc_spool_dir=str(tmp_path))


def _insert(conn: psycopg.Connection[Any], schema: str, first: int, last: int) -> None:
    conn.execute(sql.SQL("INSERT INTO {} SELECT g, 'row ' || g FROM generate_series(%s::int, %s::int) g").format(
        sql.Identifier(schema, "big")), (first, last))


pytestmark_integration = pytest.mark.integration


@pytestmark_integration
def test_a_200k_row_transaction_is_streamed_and_arrives_once_and_complete(
    streaming: Settings, cdc_schema: str, pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    CdcReader(streaming).setup()  # the topic, before reading it
    events = EventReader(streaming, "big")
    try:
        with running_reader(streaming) as reader:
            _insert(pg, cdc_schema, 1, BIG)
            got = events.read(BIG, timeout=300)
            time.sleep(1.0)
            events.drain(quiet=1.0)
            assert reader.metrics.streamed_transactions._value.get() == 1
        assert len(events.events) == BIG
        assert {int(e["after"]["id"]) for _, _, e in events.events} == set(range(1, BIG + 1))
        assert len({e["source"]["commit_lsn"] for _, _, e in got}) == 1
        assert len({e["source"]["lsn"] for _, _, e in got}) == BIG  # each its own change's LSN
        assert not list(tmp_path.glob("*.spool"))  # published: the spool is gone
    finally:
        events.close()


@pytestmark_integration
def test_a_rolled_back_streamed_transaction_publishes_nothing_and_a_rolled_back_savepoint_only_its_rows(
    streaming: Settings, cdc_schema: str, pg: psycopg.Connection[Any], pg_dsn: str, tmp_path: Path,
) -> None:
    CdcReader(streaming).setup()
    events = EventReader(streaming, "big")
    try:
        with running_reader(streaming) as reader:
            with psycopg.connect(pg_dsn) as conn:  # a transaction of its own, rolled back
                _insert(conn, cdc_schema, 1_000_001, 1_050_000)
                wait_for(lambda: bool(list(tmp_path.glob("*.spool"))), 60, "the transaction to be streamed")
                conn.rollback()
            with psycopg.connect(pg_dsn) as conn:
                _insert(conn, cdc_schema, 1, 30_000)
                conn.execute("SAVEPOINT s")
                _insert(conn, cdc_schema, 30_001, 60_000)
                conn.execute("ROLLBACK TO SAVEPOINT s")
                _insert(conn, cdc_schema, 60_001, 90_000)
                conn.commit()
            events.read(60_000, timeout=180)
            _insert(pg, cdc_schema, -1, -1)  # a marker committed after both
            wait_for(lambda: bool(events.drain(quiet=0.5)) and any(e["after"]["id"] == -1 for _, _, e in events.events),
                     60, "the marker")
            assert reader.metrics.streamed_transactions._value.get() == 1  # the savepoint one; the other aborted
        ids = [e["after"]["id"] for _, _, e in events.events]
        assert len(ids) == 60_001
        assert set(ids) == set(range(1, 30_001)) | set(range(60_001, 90_001)) | {-1}
        assert not list(tmp_path.glob("*.spool"))
    finally:
        events.close()


@pytestmark_integration
def test_sigkill_mid_stream_then_restart_delivers_every_change(
    streaming: Settings, cdc_schema: str, pg: psycopg.Connection[Any], pg_dsn: str, tmp_path: Path,
) -> None:
    CdcReader(streaming).setup()
    env = child_env(streaming)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "insights", "cdc", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    proc = start()
    conn = psycopg.connect(pg_dsn)
    events = EventReader(streaming, "big")
    try:
        _insert(pg, cdc_schema, 1, 1000)  # committed before: delivered, confirmed or not
        _insert(conn, cdc_schema, 1001, 100_000)  # in progress: streamed into the reader's spool
        wait_for(lambda: any(p.stat().st_size > 1_000_000 for p in tmp_path.glob("*.spool")), 120,
                 "the reader to spool the streamed transaction")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert list(tmp_path.glob("*.spool"))  # a killed reader leaves its spool
        conn.commit()
        proc = start()
        got = events.read_distinct_keys(100_000, timeout=300)
        wait_for(lambda: not list(tmp_path.glob("*.spool")), 60, "the stale spool to be removed")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        conn.close()
        events.close()
    by_key: dict[int, set[int]] = {}
    for _, _, e in got:
        by_key.setdefault(e["after"]["id"], set()).add(e["source"]["lsn"])
    assert set(by_key) == set(range(1, 100_001))
    assert all(len(lsns) == 1 for lsns in by_key.values())  # duplicates only with the same LSN


@pytestmark_integration
def test_typed_events_of_a_streamed_transaction_carry_its_commit(
    streaming: Settings, cdc_schema: str, pg: psycopg.Connection[Any],
) -> None:
    import uuid

    from streams.cdc.typed_schemas import make_decoder

    settings = streaming.replace(cdc_format="typed", schema_registry_url=f"mock://stream-{uuid.uuid4().hex[:8]}")
    CdcReader(settings).setup()
    events = EventReader(settings, "big")
    events.decode = make_decoder(settings)
    try:
        with running_reader(settings) as reader:
            with pg.transaction():
                _insert(pg, cdc_schema, 1, 20_000)
                xid = pg.execute("SELECT txid_current() % (2^32)::bigint").fetchone()[0]
            got = events.read(20_000, timeout=120)
            assert reader.metrics.streamed_transactions._value.get() == 1
    finally:
        events.close()
    sources = {(e["source"]["commit_lsn"], e["source"]["xid"], e["source"]["commit_time"]) for _, _, e in got}
    assert len(sources) == 1
    commit_lsn, got_xid, commit_time = sources.pop()
    assert got_xid == xid and commit_lsn > 0 and commit_time.year >= 2024  # timestamp-micros: a datetime
    assert sorted(e["after"]["id"] for _, _, e in got) == list(range(1, 20_001))
    assert got[0][2]["after"]["payload"] == f"row {got[0][2]['after']['id']}"
