"""CDC benchmark: throughput and commit-to-Kafka latency of `insights cdc run`, beside pg_recvlogical.

Run against the local stack (it makes and drops its own database, slots and topics):

    .venv/bin/python bench/cdc_bench.py --rows 200000 --rate 10000 --seconds 20 --write

* ceiling: ``pg_recvlogical`` reading a second pgoutput slot to /dev/null (decoding only,
  no values converted, nothing sent anywhere);
* throughput: the reader decoding, encoding and delivering one big backlog, timed until
  the slot position covering the last commit was confirmed (= every event acknowledged);
* latency: a separate process commits 100-row transactions every 10 ms (10,000 row
  changes/s) while the reader runs; commit time -> Kafka acknowledgement per change;
* profile: cProfile of the reader on a smaller backlog, top functions by own time;
* reader CPU: the same table's Insert frames, built in memory, fed to the reader's frame
  handler with a producer that only counts (no socket, no broker): the reader's own CPU
  time per change, best of 5 (process time, so other load on the machine matters less).

``--compare-binary ROUNDS`` instead compares text and pgoutput binary mode
(``INSIGHTS_CDC_PGOUTPUT_BINARY``) in interleaved rounds over one backlog: pg_recvlogical both
ways (``-o binary=true``), the reader draining it both ways, and the reader's CPU per change
on the server's own frames of each kind (peeked from a slot). It prints and writes nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import platform
import pstats
import re
import resource
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import Settings, load_settings  # noqa: E402
from streams.cdc import slot as slots  # noqa: E402
from streams.cdc.codegen import EXAMPLE  # noqa: E402
from streams.cdc.lsn import parse_lsn  # noqa: E402
from streams.cdc import incremental  # noqa: E402
from streams.cdc.reader import CdcReader  # noqa: E402
from streams.cdc.snapshot import run_snapshot  # noqa: E402
from streams.topics import cdc_topic_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DDL = """
CREATE TABLE product_snapshots (
    id bigint NOT NULL, asin varchar(10) NOT NULL, title varchar(500), price numeric(10,2),
    buybox_price numeric(10,2), rating numeric(3,2), review_count integer DEFAULT 0,
    bsr_data jsonb DEFAULT '{}', availability_status varchar(50), bullet_points text[],
    images jsonb DEFAULT '[]', scraped_at timestamptz NOT NULL, processing_status varchar(20) DEFAULT 'processed',
    created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, scraped_at)
) PARTITION BY RANGE (scraped_at);
CREATE TABLE product_snapshots_2024_01 PARTITION OF product_snapshots FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE product_snapshots_2024_02 PARTITION OF product_snapshots FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
"""
INSERT = """
INSERT INTO product_snapshots (id, asin, title, price, buybox_price, rating, review_count, bsr_data,
                               availability_status, bullet_points, images, scraped_at)
SELECT g, 'B' || lpad((g %% 5000)::text, 9, '0'), 'Product title ' || g, (g %% 10000) / 100.0 + 1,
       (g %% 10000) / 100.0 + 2, (g %% 500) / 100.0, g %% 9000,
       jsonb_build_object('Kitchen', g %% 1000, 'All', g %% 100000), 'In Stock',
       ARRAY['bullet one', 'bullet two'], '["https://img/1.jpg"]',
       '2024-01-01'::timestamptz + (g %% 2500000) * interval '1 second'
  FROM generate_series(%s::bigint, %s::bigint) g
"""


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    free = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    return (
        f"- CPU: {cpu}, `nproc` = {os.cpu_count()}; load average at start {load[0]:.2f} (the 2 cores are shared "
        f"with PostgreSQL, Kafka and other work)\n- Python {platform.python_version()}, {platform.platform()}\n"
        f"- `free -h`:\n\n```\n{free}\n```"
    )


def current_lsn(conn: psycopg.Connection[Any]) -> int:
    return parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]


def drive_reader(settings: Settings, until_lsn: int, profile: cProfile.Profile | None = None) -> tuple[float, CdcReader]:
    """Run a reader until it confirmed ``until_lsn``; wall seconds from start."""
    done = threading.Event()
    stop = threading.Event()
    reader = CdcReader(settings, stop=stop, on_confirm=lambda lsn: done.set() if lsn >= until_lsn else None)
    started = time.perf_counter()

    def target() -> None:
        if profile is not None:
            profile.runcall(reader.run)
        else:
            reader.run()

    thread = threading.Thread(target=target)
    thread.start()
    done.wait(900)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    return elapsed, reader


def steady_writer(dsn: str, rate: int, seconds: float, first_id: int, out: Any) -> None:
    per_txn = rate // 100
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        ticks = int(seconds * 100)
        next_id = first_id
        for tick in range(ticks):
            conn.execute(INSERT, (next_id, next_id + per_txn - 1))
            next_id += per_txn
            delay = start + (tick + 1) / 100 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        out.put((next_id - first_id, time.perf_counter() - start))


# --- reader CPU, without socket or broker ----------------------------------------------------
def _xlog(payload: bytes, lsn: int) -> bytes:
    return b"w" + struct.pack("!QQQ", lsn, lsn, 0) + payload


def bench_frames(rows: int, oid: int = 424242) -> list[bytes]:
    """One transaction of ``rows`` Inserts as the walsender sends them (the text INSERT writes)."""
    columns = EXAMPLE.columns  # DDL's product_snapshots, as its Relation message describes it
    relation = b"R" + struct.pack("!I", oid) + b"public\0product_snapshots\0d" + struct.pack("!H", len(columns))
    for column in columns:
        relation += bytes([column.is_key]) + column.name.encode() + b"\0"
        relation += struct.pack("!Ii", column.type_oid, column.type_modifier)
    frames = [_xlog(relation, 1), _xlog(b"B" + struct.pack("!QqI", 10**9, 0, 7), 1)]
    for g in range(rows):
        values = [
            str(g), f"B{g % 5000:09d}", f"Product title {g}", f"{(g % 10000) / 100 + 1:.2f}",
            f"{(g % 10000) / 100 + 2:.2f}", f"{(g % 500) / 100:.2f}", str(g % 9000),
            f'{{"All": {g % 100000}, "Kitchen": {g % 1000}}}', "In Stock", '{"bullet one","bullet two"}',
            '["https://img/1.jpg"]', f"2024-01-01 00:{g // 60 % 60:02d}:{g % 60:02d}+00", "processed",
            "2025-11-25 02:24:00.123456+00",
        ]
        insert = b"I" + struct.pack("!I", oid) + b"N" + struct.pack("!H", len(values))
        for value in values:
            raw = value.encode()
            insert += b"t" + struct.pack("!I", len(raw)) + raw
        frames.append(_xlog(insert, 10**6 + g))
    frames.append(_xlog(b"C" + struct.pack("!BQQq", 0, 10**9, 10**9 + 1, 0), 10**9))
    return frames


class _CountingProducer:
    def __init__(self) -> None:
        self.count = 0

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        self.count += 1

    def poll(self, _timeout: float = 0) -> int:
        return 0


def reader_cpu(settings: Settings, rows: int, rounds: int = 5) -> float:
    """CPU seconds per change of ``CdcReader._handle`` on in-memory frames, best of ``rounds``."""
    frames = bench_frames(rows)
    best = float("inf")
    for _ in range(rounds):
        producer = _CountingProducer()
        reader = CdcReader(settings, producer=producer)  # type: ignore[arg-type]
        reader._known_topics.add(cdc_topic_name(settings, "product_snapshots"))  # no topic admin
        started = time.process_time()
        for frame in frames:
            reader._handle(frame)
        best = min(best, time.process_time() - started)
        assert producer.count == rows, producer.count
    return best / rows


# --- text vs pgoutput binary mode (INSIGHTS_CDC_PGOUTPUT_BINARY) -------------------------------
def server_frames(conn: psycopg.Connection[Any], slot: str, publication: str, binary: bool) -> list[bytes]:
    """The slot's pending pgoutput messages (peeked, not consumed) as XLogData frames."""
    options = ["proto_version", "1", "publication_names", publication] + (["binary", "true"] if binary else [])
    rows = conn.execute(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
        + ", ".join(["%s"] * len(options)) + ")", [slot, *options],
    ).fetchall()
    return [_xlog(bytes(data), parse_lsn(lsn)) for lsn, data in rows]


def frames_cpu(settings: Settings, frames: list[bytes], rows: int) -> float:
    """CPU seconds per change of ``CdcReader._handle`` on ``frames`` (one round)."""
    producer = _CountingProducer()
    reader = CdcReader(settings, producer=producer)  # type: ignore[arg-type]
    reader._known_topics.add(cdc_topic_name(settings, "product_snapshots"))  # no topic admin
    started = time.process_time()
    for frame in frames:
        reader._handle(frame)
    spent = time.process_time() - started
    assert producer.count == rows, producer.count
    return spent / rows


def _ceiling(recv: str, dsn: str, slot: str, publication: str, end: int, binary: bool) -> tuple[float, float]:
    """pg_recvlogical draining ``slot`` to ``end``: (wall seconds, its own CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [recv, "-d", dsn, "-S", slot, "--start", "-o", "proto_version=1", "-o", f"publication_names={publication}",
         *(["-o", "binary=true"] if binary else []), "-E", f"{end >> 32:X}/{end & 0xFFFFFFFF:X}", "-f", "/dev/null"],
        check=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def compare_binary(args: argparse.Namespace) -> None:
    """Text against binary mode, interleaved rounds on one backlog: pg_recvlogical both ways (the
    ceiling), the reader draining it both ways (wall and process CPU), and the reader's CPU per
    change on the server's own frames of both kinds. Prints; writes nothing."""
    from insights.stack.replicas import local_stack_dsn

    base = local_stack_dsn(load_settings())
    admin_dsn = make_conninfo(base.pg.conninfo(), dbname="postgres")
    tag = uuid.uuid4().hex[:8]
    db = f"cdc_bench_{tag}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    dsn = make_conninfo(base.pg.conninfo(), dbname=db)
    settings = base.replace(pg_dsn=dsn, topic_prefix=f"bench-{tag}", cdc_slot_name=f"bench_{tag}",
                            cdc_publication=f"bench_{tag}", cdc_tables=["product_snapshots"], metrics_port=0)
    publication = settings.cdc.publication
    recv = shutil.which("pg_recvlogical") or "/usr/lib/postgresql/15/bin/pg_recvlogical"
    rounds = args.compare_binary
    modes = ("text", "binary")
    results: dict[str, dict[str, list[float]]] = {m: {"recv": [], "recv_cpu": [], "reader": [], "reader_cpu": [],
                                                      "cpu_us": []} for m in modes}
    load = os.getloadavg()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(DDL)
            CdcReader(settings).setup()  # the publication, the first reader slot, the topics
            names = [f"bench_{tag}"] + [f"bench_{tag}_{i}" for i in range(1, 2 * rounds)]
            recv_slots = [f"bench_recv_{tag}_{i}" for i in range(2 * rounds)]
            for name in names[1:] + recv_slots:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
            conn.execute(INSERT, (1, args.rows))
            end = current_lsn(conn)
        for r in range(rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                wall, cpu = _ceiling(recv, dsn, recv_slots.pop(), publication, end, mode == "binary")
                results[mode]["recv"].append(args.rows / wall)
                results[mode]["recv_cpu"].append(cpu / args.rows * 1e6)
            for mode in order:
                reader_settings = settings.replace(cdc_slot_name=names.pop(), cdc_pgoutput_binary=mode == "binary")
                cpu0 = time.process_time()
                elapsed, _ = drive_reader(reader_settings, end)
                results[mode]["reader"].append(args.rows / elapsed)
                results[mode]["reader_cpu"].append((time.process_time() - cpu0) / args.rows * 1e6)
            print(f"round {r + 1}: " + ", ".join(
                f"{m} recv {results[m]['recv'][-1]:,.0f}/s reader {results[m]['reader'][-1]:,.0f}/s" for m in order
            ), flush=True)
        # the reader's own CPU per change on the server's frames of a smaller transaction
        with psycopg.connect(dsn, autocommit=True) as conn:
            cpu_slot = f"bench_cpu_{tag}"
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (cpu_slot,))
            first = args.rows + 1
            conn.execute(INSERT, (first, first + args.cpu_rows - 1))
            frames = {m: server_frames(conn, cpu_slot, publication, m == "binary") for m in modes}
            conn.execute("SELECT pg_drop_replication_slot(%s)", (cpu_slot,))
        for r in range(5):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                results[mode]["cpu_us"].append(
                    frames_cpu(settings.replace(cdc_pgoutput_binary=mode == "binary"), frames[mode], args.cpu_rows) * 1e6
                )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                         (db,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        admin = AdminClient(settings.kafka.client_config())
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.kafka.topic_prefix + ".")]
        if topics:
            for f in admin.delete_topics(topics).values():
                try:
                    f.result(30)
                except Exception:
                    pass

    def med(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print(f"\n{args.rows:,}-row backlog, {rounds} interleaved rounds, load average before {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| mode | pg_recvlogical changes/s (median, best) | its CPU us/change | reader changes/s (median, best) "
          "| ratio (medians) | reader process CPU us/change (drain) | reader CPU us/change (frames, best of 5) |")
    print("|---|---|---|---|---|---|---|")
    for m in modes:
        res = results[m]
        print(f"| {m} | {med(res['recv']):,.0f}, {max(res['recv']):,.0f} | {med(res['recv_cpu']):.1f} | "
              f"{med(res['reader']):,.0f}, {max(res['reader']):,.0f} | {med(res['reader']) / med(res['recv']):.2f} | "
              f"{med(res['reader_cpu']):.1f} | {min(res['cpu_us']):.1f} |")


# --- protocol v2 streaming of a large transaction (INSIGHTS_CDC_STREAMING) ----------------------
def compare_streaming(args: argparse.Namespace) -> None:
    """Commit -> last acknowledgement of one large transaction (``--rows`` INSERTs), with and without
    streaming, interleaved rounds; the reader runs before the transaction begins. Prints only."""
    from insights.stack.replicas import local_stack_dsn

    base = local_stack_dsn(load_settings())
    admin_dsn = make_conninfo(base.pg.conninfo(), dbname="postgres")
    tag = uuid.uuid4().hex[:8]
    db = f"cdc_bench_{tag}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    dsn = make_conninfo(base.pg.conninfo(), dbname=db)
    settings = base.replace(pg_dsn=dsn, topic_prefix=f"bench-{tag}", cdc_slot_name=f"bench_{tag}",
                            cdc_publication=f"bench_{tag}", cdc_tables=["product_snapshots"], metrics_port=0,
                            cdc_logical_decoding_work_mem=args.work_mem)
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    load = os.getloadavg()
    next_id = 1
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(DDL)
        CdcReader(settings).setup()
        for r in range(args.compare_streaming):
            for mode in (False, True) if r % 2 == 0 else (True, False):
                confirmed = [0]
                stop = threading.Event()
                reader = CdcReader(settings.replace(cdc_streaming=mode), stop=stop,
                                   on_confirm=lambda lsn: confirmed.__setitem__(0, lsn))
                thread = threading.Thread(target=reader.run)
                thread.start()
                while not reader.metrics.connected._value.get():
                    time.sleep(0.05)
                with psycopg.connect(dsn) as conn:
                    t0 = time.perf_counter()
                    # the transaction's rows in 20 statements spread over --txn-seconds: a batch job's
                    # transaction, not one INSERT ... SELECT that is over before the reader could start
                    step = args.rows // 20
                    for i in range(20):
                        first = next_id + i * step
                        conn.execute(INSERT, (first, next_id + args.rows - 1 if i == 19 else first + step - 1))
                        delay = t0 + (i + 1) * args.txn_seconds / 20 - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    conn.commit()
                    committed = time.perf_counter()
                    end = current_lsn(conn)
                next_id += args.rows
                while confirmed[0] < end:
                    time.sleep(0.01)
                acked = time.perf_counter()
                stop.set()
                thread.join()
                results[mode].append((committed - t0, acked - committed))
                print(f"round {r + 1} streaming={mode}: transaction {committed - t0:.2f} s, "
                      f"commit -> last ack {acked - committed:.2f} s", flush=True)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                         (db,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        admin = AdminClient(settings.kafka.client_config())
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.kafka.topic_prefix + ".")]
        if topics:
            for f in admin.delete_topics(topics).values():
                try:
                    f.result(30)
                except Exception:
                    pass
    print(f"\n{args.rows:,}-row transaction (20 INSERTs over >= {args.txn_seconds:g} s), logical_decoding_work_mem {args.work_mem or 'server default'}, "
          f"{args.compare_streaming} interleaved rounds, load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| streaming | transaction (BEGIN..COMMIT) s, median | commit -> last ack s, median (all) |")
    print("|---|---|---|")
    for mode, rows in results.items():
        txn = sorted(t for t, _ in rows)
        lag = sorted(a for _, a in rows)
        print(f"| {'on' if mode else 'off'} | {txn[len(txn) // 2]:.2f} | {lag[len(lag) // 2]:.2f} "
              f"({', '.join(f'{a:.2f}' for _, a in rows)}) |")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--profile-rows", type=int, default=50_000)
    parser.add_argument("--cpu-rows", type=int, default=20_000, help="Inserts per round of the reader CPU measurement")
    parser.add_argument("--write", action="store_true", help="write the ## CDC section of BENCHMARKS.md")
    parser.add_argument("--compare-binary", type=int, default=0, metavar="ROUNDS",
                        help="only compare text and pgoutput binary mode over ROUNDS interleaved rounds (prints)")
    parser.add_argument("--compare-streaming", type=int, default=0, metavar="ROUNDS",
                        help="only compare commit -> last ack of one --rows transaction with and without streaming")
    parser.add_argument("--work-mem", default="", help="with --compare-streaming: logical_decoding_work_mem")
    parser.add_argument("--txn-seconds", type=float, default=0.0,
                        help="with --compare-streaming: spread the transaction's 20 INSERTs over this many seconds")
    args = parser.parse_args()
    if args.compare_streaming:
        compare_streaming(args)
        return
    if args.compare_binary:
        compare_binary(args)
        return

    base = load_settings()
    admin_dsn = make_conninfo(base.pg.conninfo(), dbname="postgres")
    tag = uuid.uuid4().hex[:8]
    db = f"cdc_bench_{tag}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    dsn_parts = conninfo_to_dict(base.pg.dsn)
    dsn_parts["dbname"] = db
    settings = load_settings(
        pg_dsn=make_conninfo(**dsn_parts),
        topic_prefix=f"bench-{tag}",
        cdc_slot_name=f"bench_{tag}",
        cdc_publication=f"bench_{tag}",
        cdc_tables=["product_snapshots"],
        metrics_port=0,
    )
    dsn = settings.pg.conninfo()
    ceiling_slot = f"bench_recv_{tag}"
    results: dict[str, Any] = {}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(DDL)
            CdcReader(settings).setup()
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (ceiling_slot,))
            # --- one backlog, read by both --------------------------------------------------
            t0 = time.perf_counter()
            conn.execute(INSERT, (1, args.rows))
            results["insert_s"] = time.perf_counter() - t0
            end = current_lsn(conn)

        recv = shutil.which("pg_recvlogical") or "/usr/lib/postgresql/15/bin/pg_recvlogical"
        t0 = time.perf_counter()
        subprocess.run(
            [recv, "-d", dsn, "-S", ceiling_slot, "--start", "-o", "proto_version=1",
             "-o", f"publication_names={settings.cdc.publication}", "-E", f"{end >> 32:X}/{end & 0xFFFFFFFF:X}",
             "-f", "/dev/null"],
            check=True,
        )
        results["recv_s"] = time.perf_counter() - t0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (ceiling_slot,))

        elapsed, _ = drive_reader(settings, end)
        results["reader_s"] = elapsed

        # --- steady 10k/s: latency ------------------------------------------------------------
        samples: list[float] = []
        stop = threading.Event()
        reader = CdcReader(settings, stop=stop, on_latency=samples.append)
        thread = threading.Thread(target=reader.run)
        thread.start()
        time.sleep(2)
        samples.clear()
        queue: Any = multiprocessing.Queue()
        writer = multiprocessing.Process(
            target=steady_writer, args=(dsn, args.rate, args.seconds, args.rows + 1, queue)
        )
        writer.start()
        written, writer_s = queue.get(timeout=args.seconds * 5 + 60)
        writer.join()
        deadline = time.monotonic() + 60
        while len(samples) < written and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join()
        results.update(steady_rows=written, steady_s=writer_s, samples=len(samples))
        results["p50_ms"] = percentile(samples, 0.50) * 1000
        results["p99_ms"] = percentile(samples, 0.99) * 1000
        results["max_ms"] = max(samples) * 1000

        # --- snapshots of the whole table: full (a new slot's exported snapshot) and incremental ---
        with psycopg.connect(dsn, autocommit=True) as conn:
            table_rows = conn.execute("SELECT count(*) FROM product_snapshots").fetchone()[0]
        full_settings = settings.replace(cdc_slot_name=f"bench_full_{tag}")
        t0 = time.perf_counter()
        run_snapshot(full_settings, ("product_snapshots",))
        results["full_snapshot_s"] = time.perf_counter() - t0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (full_settings.cdc.slot_name,))
        stop = threading.Event()
        reader = CdcReader(settings, stop=stop)
        thread = threading.Thread(target=reader.run)
        thread.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            signal = incremental.request(conn, "public", settings.cdc.slot_name, ["product_snapshots"])
            while incremental.progress(conn, "public", settings.cdc.slot_name, signal)[0].status != "done":
                time.sleep(0.1)
            results["incremental_snapshot_s"] = time.perf_counter() - t0
        stop.set()
        thread.join()
        results["snapshot_rows"] = table_rows

        # --- profile ---------------------------------------------------------------------------
        with psycopg.connect(dsn, autocommit=True) as conn:
            first = args.rows + written + 1
            conn.execute(INSERT, (first, first + args.profile_rows - 1))
            end2 = current_lsn(conn)
        profile = cProfile.Profile()
        drive_reader(settings, end2, profile)
        stream = io.StringIO()
        pstats.Stats(profile, stream=stream).sort_stats("tottime").print_stats(14)
        results["profile"] = "\n".join(
            line for line in stream.getvalue().splitlines() if re.match(r"\s*\d", line) or "ncalls" in line
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            slots.drop(conn, settings.cdc.slot_name, settings.cdc.publication)
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (ceiling_slot,),
            )
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        admin = AdminClient(settings.kafka.client_config())
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.kafka.topic_prefix + ".")]
        if topics:
            for f in admin.delete_topics(topics).values():
                try:
                    f.result(30)
                except Exception:
                    pass

    results["cpu_us"] = reader_cpu(settings, args.cpu_rows) * 1e6
    results["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = results["recv_s"] / results["reader_s"]
    rows = args.rows
    report = f"""## CDC

`insights cdc run` (streams/cdc) against `pg_recvlogical`, same machine, same run, same backlog of
{rows:,} single-row INSERTs (one transaction) into a seed-shaped, monthly-partitioned
`product_snapshots` (14 columns: numerics, jsonb, text[], timestamptz), published via the partition root.

Command: `{' '.join(['.venv/bin/python', 'bench/cdc_bench.py'] + sys.argv[1:])}`

{machine()}

| measurement | result |
|---|---|
| `pg_recvlogical` (pgoutput, to /dev/null): ceiling | {rows / results['recv_s']:,.0f} changes/s ({results['recv_s']:.2f} s) |
| CDC reader: decoded, Avro-encoded, delivered to Kafka (acks=all, idempotent) and confirmed | {rows / results['reader_s']:,.0f} changes/s ({results['reader_s']:.2f} s), **{ratio:.2f}** of `pg_recvlogical` |
| steady load offered | {results['steady_rows'] / results['steady_s']:,.0f} row changes/s for {results['steady_s']:.1f} s (100-row transactions every 10 ms, separate process) |
| commit -> Kafka ack latency at that load | p50 {results['p50_ms']:.1f} ms, p99 {results['p99_ms']:.1f} ms, max {results['max_ms']:.1f} ms ({results['samples']:,} changes) |
| reader CPU per change (in-memory Insert frames -> frame handler -> counting producer, best of 5) | {results['cpu_us']:.1f} us ({1e6 / results['cpu_us']:,.0f} changes/s on one core, {args.cpu_rows:,} Inserts per round) |
| full snapshot (`cdc snapshot`, new slot's exported snapshot) of the table | {results['snapshot_rows'] / results['full_snapshot_s']:,.0f} rows/s ({results['snapshot_rows']:,} rows, {results['full_snapshot_s']:.2f} s) |
| incremental snapshot (`cdc snapshot --incremental`, chunks of {settings.cdc.incremental_chunk_size:,} between watermarks, reader streaming) | {results['snapshot_rows'] / results['incremental_snapshot_s']:,.0f} rows/s ({results['incremental_snapshot_s']:.2f} s, request to state `done`) |
| peak RSS of the benchmark process (reader, producer, profiler) | {results['rss_mb']:,.0f} MB |

Targets: >= 50,000 changes/s sustained; p99 < 100 ms at 10,000/s.

Profile of the reader (cProfile, {args.profile_rows:,}-row backlog, top functions by own time):

```
{results['profile']}
```
"""
    print(report)
    if args.write:
        write_section(ROOT / "BENCHMARKS.md", report)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the ``## CDC`` section; other sections are left as they are."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## CDC\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section.rstrip() + "\n\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


if __name__ == "__main__":
    main()
