"""Benchmark: one `scrape` consumer process, Kafka -> PostgreSQL, against a server-side COPY.

    PYTHONPATH=. .venv/bin/python bench/consume_scrape.py --events 200000 [--profile] [--write]

1. Generates ``--events`` realistic ProductScraped events (insights.generate.Market) and
   produces them to a fresh topic (not timed).
2. Times one consumer loop (the same code ``insights consume scrape`` runs) from its
   first batch to its last commit, into a freshly migrated database.
3. Exports the rows the consumer stored (products, product_snapshots, product_features)
   with a server-side ``COPY ... TO`` file, and times a server-side ``COPY ... FROM``
   of exactly those rows into a second freshly migrated database on the same server.
4. Prints events/s, COPY rows/s (as events/s: snapshot rows, one per event) and the
   ratio; ``--write`` replaces the ``## Consumers`` section of BENCHMARKS.md.

Everything it creates (two databases, a topic and its DLQ) is dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata
import io
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql

from consumers.registry import build_loop
from core.paths import REPO_ROOT
from insights.db.migrations import migrate
from insights.generate import Market, scrape_record
from core.settings import Settings, load_settings
from streams.pg.partitions import ensure_partitions_for
from streams.serde import RecordContext, make_serializer
from streams.topics import dlq_name

TABLES: dict[str, tuple[str, ...]] = {
    "products": ("asin", "title", "brand", "category", "manufacturer", "model", "dimensions", "weight",
                 "first_tracked_at", "last_updated_at", "last_scraped_at"),
    "product_snapshots": ("asin", "title", "price", "buybox_price", "rating", "review_count", "bsr_data",
                          "availability_status", "bullet_points", "product_description", "images",
                          "variations", "scraped_at", "raw_data", "event_id"),
    "product_features": ("asin", "feature_category", "feature_name", "feature_value", "confidence_score",
                         "extracted_at", "extraction_method"),
}


def create_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    migrate(dsn)
    return dsn


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def produce_events(settings: Settings, topic: str, events: int, products: int) -> float:
    now = datetime.now(UTC)
    market = Market(products, now - timedelta(days=60), seed=42, span=timedelta(days=59), events=events)
    serialize = make_serializer(settings, "product_scraped")
    producer = Producer(settings.kafka.client_config(**{"linger.ms": 50, "batch.size": 1_000_000,
                                                 "compression.type": "lz4"}))
    ctx = RecordContext(topic)
    started = time.perf_counter()
    for scrape in market.scrapes(events):
        value = serialize(scrape_record(scrape), ctx)
        while True:
            try:
                producer.produce(topic, key=scrape.asin.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120):
        raise SystemExit("not every benchmark event was delivered")
    return time.perf_counter() - started


class BackendCpu:
    """CPU seconds of the consumer's PostgreSQL backends, sampled from /proc while they live
    (the server runs on this machine; a backend's counters vanish when it exits, and the
    loop's idle wait at the end leaves a last sample after its last commit)."""

    def __init__(self, admin_dsn: str, dbname: str, every: float = 0.25) -> None:
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, args=(admin_dsn, dbname, every), daemon=True)
        self._thread.start()

    def _run(self, admin_dsn: str, dbname: str, every: float) -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            while not self._stop.wait(every):
                pids = [row[0] for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'insights-consume%%'",
                    (dbname,))]
                for pid in pids:
                    try:
                        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after "(comm) "
                    self._seen[pid] = (int(fields[11]) + int(fields[12])) / self._tick

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return sum(self._seen.values())


def write_counters(dsn: str, tables: tuple[str, ...] = ("products", "product_features")) -> dict[str, tuple[int, int, int]]:
    """(inserted, updated, HOT updated) per table, once the consumer's backend reported them at its exit."""
    query = ("SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
             "WHERE schemaname = 'public' AND relname = ANY(%s)")
    last: dict[str, tuple[int, int, int]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(25):  # a few seconds at most: the counters arrive when the backend exits
            conn.execute("SELECT pg_stat_clear_snapshot()")
            now = {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in conn.execute(query, (list(tables),))}
            if now == last and len(now) == len(tables) and all(ins for ins, _, _ in now.values()):
                break
            last = now
            time.sleep(0.2)
    return last


def server_copy(source_dsn: str, target_dsn: str, workdir: Path) -> tuple[float, dict[str, int]]:
    """Export the stored rows to files (server side), then time COPY FROM them into ``target``."""
    counts: dict[str, int] = {}
    with psycopg.connect(source_dsn, autocommit=True) as src:
        for table, cols in TABLES.items():
            path = workdir / f"{table}.copy"
            columns = sql.SQL(", ").join(map(sql.Identifier, cols))
            src.execute(sql.SQL("COPY (SELECT {} FROM {}) TO {}").format(columns, sql.Identifier(table), sql.Literal(str(path))))
            counts[table] = int(src.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0])  # type: ignore[index]
        stamps = [row[0] for row in src.execute("SELECT DISTINCT date_trunc('day', scraped_at) FROM product_snapshots")]
    with psycopg.connect(target_dsn, autocommit=True) as dst:
        # the same partitions the consumer created, made before the clock starts
        ensure_partitions_for(dst, "product_snapshots", stamps)
        started = time.perf_counter()
        with dst.transaction():
            for table, cols in TABLES.items():
                columns = sql.SQL(", ").join(map(sql.Identifier, cols))
                path = workdir / f"{table}.copy"
                dst.execute(sql.SQL("COPY {} ({}) FROM {}").format(sql.Identifier(table), columns, sql.Literal(str(path))))
        elapsed = time.perf_counter() - started
    return elapsed, counts


def machine_facts(dsn: str) -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    with psycopg.connect(dsn) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    from insights.stack.kafka import POM, pom_version  # the version the stack's pom pins

    kafka = pom_version(POM.read_text())
    return (f"{os.cpu_count()} vCPU ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {pg_version} (local stack), Kafka {kafka} KRaft (local stack), "
            f"confluent-kafka {importlib.metadata.version('confluent-kafka')}, psycopg {psycopg.__version__}")


def write_section(text: str) -> None:
    path = REPO_ROOT / "BENCHMARKS.md"
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    marker = "\n## Consumers\n"
    if marker in current:
        head, rest = current.split(marker, 1)
        # keep the sections other benchmarks appended after ours
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        current = head.rstrip() + "\n" + tail
    path.write_text(current.rstrip() + "\n" + marker + text.rstrip() + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--profile", action="store_true", help="run the consumer under cProfile and print the top")
    parser.add_argument("--write", action="store_true", help="replace the ## Consumers section of BENCHMARKS.md")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    tag = uuid.uuid4().hex[:10]
    base = load_settings()
    admin_dsn = base.pg.conninfo(dbname="postgres")
    db_consumer, db_copy = f"bench_consume_{tag}", f"bench_copy_{tag}"
    settings = load_settings(
        pg_dsn=psycopg.conninfo.make_conninfo(base.pg.dsn, dbname=db_consumer),
        topic_prefix=f"bench{tag}", consumer_group=f"bench-{tag}", metrics_port=0,
        batch_size=args.batch_size, batch_wait_ms=100,
    )
    topic = settings.kafka.topic("events.product_scraped")
    admin = AdminClient(settings.kafka.client_config())
    workdir = Path(tempfile.mkdtemp(prefix="insights-bench-"))
    workdir.chmod(0o777)  # the server process (another OS user) writes and reads the files
    try:
        for name, parts in ((topic, args.partitions), (dlq_name(topic), 1)):
            admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(30)
        create_database(admin_dsn, db_consumer)
        target_dsn = create_database(admin_dsn, db_copy)
        produce_s = produce_events(settings, topic, args.events, args.products)
        print(f"produced {args.events} events in {produce_s:.1f}s", flush=True)

        # the production loop; it records the time of its first batch and its last commit
        loop = build_loop(settings, "scrape", idle_exit_after=3.0)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        backend = BackendCpu(admin_dsn, db_consumer)
        client_cpu = time.process_time()
        totals = loop.run()
        client_cpu = time.process_time() - client_cpu
        backend_cpu = backend.stop()
        if profiler:
            profiler.disable()
        first, last = loop.first_batch_at, loop.writer.last_commit_at
        assert first is not None and last is not None
        consume_s = last - first
        if totals.consumed != args.events or totals.dead_letters:
            raise SystemExit(f"consumer saw {totals.consumed} events, {totals.dead_letters} dead letters")
        events_per_s = args.events / consume_s
        print(f"consumer: {args.events} events in {consume_s:.2f}s = {events_per_s:,.0f} events/s", flush=True)
        print(f"CPU per event: client {client_cpu / args.events * 1e6:.0f} us, "
              f"PostgreSQL backend {backend_cpu / args.events * 1e6:.0f} us", flush=True)

        # what PostgreSQL did per table: rows updated, and how many of those were HOT
        # (ddl/README.md "HOT upserts"); the loop closed its connection, so they are reported
        for table, (ins, upd, hot) in write_counters(settings.pg.conninfo()).items():
            print(f"{table}: {ins} inserted, {upd} updated, {hot} of them HOT", flush=True)
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
            print(out.getvalue())
        copy_s, counts = server_copy(settings.pg.conninfo(), target_dsn, workdir)
        rows = sum(counts.values())
        copy_events_per_s = counts["product_snapshots"] / copy_s
        ratio = events_per_s / copy_events_per_s
        print(f"server COPY: {rows} rows ({counts}) in {copy_s:.2f}s = {copy_events_per_s:,.0f} snapshot rows/s "
              f"({rows / copy_s:,.0f} rows/s); ratio {ratio:.2f}", flush=True)
        if args.write:
            write_section(report(args, settings, consume_s, events_per_s, copy_s, counts, copy_events_per_s, ratio,
                                 load_at_start))
    finally:
        for dsn_name in (db_consumer, db_copy):
            drop_database(admin_dsn, dsn_name)
        for future in admin.delete_topics([topic, dlq_name(topic)]).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass
        shutil.rmtree(workdir, ignore_errors=True)


def report(args: argparse.Namespace, settings: Settings, consume_s: float, events_per_s: float, copy_s: float,
           counts: dict[str, int], copy_events_per_s: float, ratio: float,
           load_at_start: tuple[float, float, float]) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT).stdout.strip()
    rows = sum(counts.values())
    return f"""
Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit `{rev}` with

    PYTHONPATH=. .venv/bin/python bench/consume_scrape.py --events {args.events} --products {args.products} --batch-size {args.batch_size} --write

Machine: {machine_facts(settings.pg.conninfo())}; load average at the start
{' / '.join(f'{x:.2f}' for x in load_at_start)} (1 / 5 / 15 min). The machine's cores are shared by
Kafka, PostgreSQL, the consumer and whatever else runs; numbers vary by +-20 % between runs.

| what | time | rate |
|---|---|---|
| one `scrape` consumer process, Kafka -> PostgreSQL ({args.events:,} events, {args.partitions} partitions, batches of {args.batch_size}) | {consume_s:.2f} s | **{events_per_s:,.0f} events/s** |
| server-side `COPY ... FROM` file of the same rows ({counts['products']:,} products, {counts['product_snapshots']:,} snapshots, {counts['product_features']:,} features = {rows:,} rows) | {copy_s:.2f} s | **{copy_events_per_s:,.0f} events/s** ({rows / copy_s:,.0f} rows/s) |
| ratio consumer / COPY | | **{ratio:.2f}** |
"""


if __name__ == "__main__":
    sys.exit(main())
