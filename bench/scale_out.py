"""Benchmark: scale-out on a three-broker cluster (ingest with 1, 2 and 4 consumer processes; CDC with acks=all).

    .venv/bin/python bench/scale_out.py --events 60000 --cdc-rows 50000 [--write]

1. Starts a private three-node KRaft cluster (``insights stack up --brokers 3``'s code)
   under a temporary directory on free ports; topics there get replication 3 and
   ``min.insync.replicas`` 2, every producer ``acks=all``.
2. Produces ``--events`` realistic ProductScraped events (insights.generate.Market) to a
   12-partition topic once (not timed), then for 1, 2 and 4 processes of ``insights
   consume scrape`` (real subprocesses, one group) into a fresh migrated database: the
   time from the first stored offset to the last one. Process start-up is not counted.
3. The same single process against a private one-node Kafka from the same pom
   (replication 1), started before the cluster and stopped before it starts, in the same
   run: the baseline the ratios are taken to.
4. The CDC reader on a backlog of ``--cdc-rows`` inserts (bench/cdc_bench.py's table),
   delivered to the cluster and to the single broker, timed until the slot confirmed the
   last commit (every change acknowledged by all in-sync replicas).
5. Prints a Markdown section; ``--write`` replaces ``## Scale-out`` in BENCHMARKS.md.

The load average is recorded at the start and the end: on a shared two-core machine the
figures say what that machine did, not what the design can do (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cdc_bench import DDL, INSERT, current_lsn, drive_reader  # noqa: E402
from consume_scrape import create_database, drop_database, produce_events  # noqa: E402

from core.paths import REPO_ROOT  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from insights.stack import proc  # noqa: E402
from insights.stack.kafka import POM, LocalKafka, pom_version  # noqa: E402
from insights.stack.postgres import LocalPostgres  # noqa: E402
from streams.admin import ensure_topics  # noqa: E402
from streams.cdc.reader import CdcReader  # noqa: E402
from streams.topics import event_topics  # noqa: E402

INSIGHTS = str(Path(sys.executable).with_name("insights"))
PARTITIONS = 12


def free_port_block(size: int = 6) -> int:
    import random

    for _ in range(200):
        # below Linux's ephemeral range (32768-60999): a port checked free there can be
        # taken by any outgoing connection before the broker binds it
        base = random.randrange(20000, 32000, 2)
        if all(proc.port_is_free(base + i) for i in range(size)):
            return base
    raise SystemExit("no block of free ports")


def stored(dsn: str, group: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = %s", (group,)
        ).fetchone()
    return int(row[0]) if row else 0


def ingest_run(settings: Settings, admin_dsn: str, topic: str, events: int, processes: int, logs: Path) -> dict[str, Any]:
    """``processes`` consumers of one group drain ``topic`` into a fresh database."""
    db = f"scale_{uuid.uuid4().hex[:8]}"
    dsn = create_database(admin_dsn, db)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    parts = conninfo_to_dict(dsn)
    parts.pop("password", None)
    child = settings.replace(pg_dsn=make_conninfo(**parts), batch_size=5000, metrics_port=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHTS_")}
    env.update(child.to_env())
    env["INSIGHTS_LOG_JSON"] = "true"
    procs = [
        subprocess.Popen(
            [INSIGHTS, "consume", "scrape", "--group", group, "--exit-when-idle", "15"],
            env=env, stdout=open(logs / f"{group}-{i}.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        for i in range(processes)
    ]
    try:
        first = last = None
        seen = at_first = 0
        deadline = time.monotonic() + 1800
        while seen < events:
            if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
                raise SystemExit(f"{processes} consumer(s) stored {seen} of {events}; see {logs}")
            now_seen = stored(dsn, group)
            now = time.perf_counter()
            if now_seen and first is None:
                first, at_first = now, now_seen
            if now_seen != seen:
                last, seen = now, now_seen
            time.sleep(0.1)
        assert first is not None and last is not None
        if at_first >= events:
            raise SystemExit(f"all {events} events were stored in the first batch: nothing to time; raise --events")
        # the first progress seen is batches already done before the clock started: the
        # rate counts only the events stored after it
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = int(conn.execute("SELECT count(*) FROM product_snapshots").fetchone()[0])  # type: ignore[index]
        return {
            "processes": processes, "seconds": last - first, "rows": rows,
            "rate": (events - at_first) / (last - first),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        drop_database(admin_dsn, db)


def cdc_run(settings: Settings, admin_dsn: str, rows: int) -> float:
    """Changes/s of the CDC reader on a backlog of ``rows`` inserts, delivered with acks=all."""
    tag = uuid.uuid4().hex[:8]
    db = f"scale_cdc_{tag}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    try:
        cdc = settings.replace(
            pg_dsn=make_conninfo(admin_dsn, dbname=db),
            topic_prefix=f"scale-cdc-{tag}",
            cdc_slot_name=f"scale_{tag}",
            cdc_publication=f"scale_{tag}",
            cdc_tables=["product_snapshots"],
        )
        with psycopg.connect(cdc.pg.conninfo(), autocommit=True) as conn:
            conn.execute(DDL)
            CdcReader(cdc).setup()
            conn.execute(INSERT, (1, rows))
            end = current_lsn(conn)
        elapsed, _ = drive_reader(cdc, end)
        with psycopg.connect(cdc.pg.conninfo(), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (cdc.cdc.slot_name,))
        return rows / elapsed
    finally:
        drop_database(admin_dsn, db)


def loadavg() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--cdc-rows", type=int, default=50_000)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--heap-mb", type=int, default=384, help="JVM heap of each broker")
    parser.add_argument("--repeat", type=int, default=2, help="runs per figure; the best is reported")
    parser.add_argument("--write", action="store_true", help="replace the ## Scale-out section of BENCHMARKS.md")
    args = parser.parse_args()

    base = load_settings()
    admin_dsn = LocalPostgres(base).admin_dsn
    load_start = loadavg()
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    root = Path(tempfile.mkdtemp(prefix="insights-scale-"))
    logs = root / "logs"
    logs.mkdir()
    results: dict[str, Any] = {}
    try:
        # the baseline first, then the cluster, each a private Kafka from the same pom
        # (not the shared stack's broker, which runs whatever version it was started with
        # and serves other work): one node, then three; one at a time, so the baseline
        # does not share the machine with three more JVMs. Each figure is the best of
        # --repeat runs, so that one burst of other work does not decide a ratio.
        for name, nodes in (("single", 1), ("cluster", 3)):
            port = free_port_block()
            kafka = LocalKafka(
                load_settings(stack_dir=root / name, stack_kafka_port=port, stack_kafka_controller_port=port + 1,
                              stack_kafka_heap_mb=args.heap_mb),
                brokers=nodes,
            )
            try:
                print(f"starting {nodes} Kafka node(s) on 127.0.0.1:{port}… (load {loadavg()})", flush=True)
                kafka.up(wait=600)
                settings = base.replace(
                    kafka_bootstrap_servers=kafka.bootstrap,
                    topic_prefix=f"scale-{uuid.uuid4().hex[:8]}",
                    metrics_port=0,
                )
                specs = event_topics(settings, partitions=PARTITIONS)
                ensure_topics(settings, specs)  # replication from the cluster's size: 3/2 there, 1/1 on one node
                topic = specs[0].name
                produce_events(settings, topic, args.events, args.products)
                counts = [int(n) for n in args.processes.split(",")] if name == "cluster" else [1]
                for n in counts:
                    runs = [ingest_run(settings, admin_dsn, topic, args.events, n, logs) for _ in range(args.repeat)]
                    results[(name, n)] = max(runs, key=lambda r: r["rate"])
                    print(f"{name}, {n} consumer process(es): "
                          + ", ".join(f"{r['rate']:,.0f}" for r in runs) + " events/s", flush=True)
                cdc = [cdc_run(settings, admin_dsn, args.cdc_rows) for _ in range(args.repeat)]
                results[(name, "cdc")] = max(cdc)
                print(f"{name}, CDC reader: " + ", ".join(f"{c:,.0f}" for c in cdc) + " changes/s", flush=True)
            finally:
                kafka.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_end = loadavg()
    text = report(args, results, started_at, load_start, load_end)
    print(text)
    if args.write:
        write_section(text)


def report(args: argparse.Namespace, results: dict[Any, Any], started_at: str, load_start: str, load_end: str) -> str:
    baseline = results[("single", 1)]["rate"]
    one = results[("cluster", 1)]["rate"]
    lines = [
        f"Measured {started_at} with",
        "",
        f"    .venv/bin/python bench/scale_out.py --events {args.events} --products {args.products} "
        f"--cdc-rows {args.cdc_rows} --repeat {args.repeat} --write",
        "",
        f"Machine: {os.cpu_count()} vCPU, Python {platform.python_version()}, {platform.platform()}; Kafka "
        f"{pom_version(POM.read_text())}, three KRaft nodes (combined roles, {args.heap_mb} MB heap each) on the "
        "same machine as PostgreSQL and the consumers; the baseline a single node of the same version, "
        "started alone before the cluster. Load average (1 / 5 / 15 min) "
        f"at the start {load_start}, at the end {load_end}.",
        "",
        f"Ingest: {args.events:,} events on {PARTITIONS} partitions, `insights consume scrape` processes of one group, "
        f"batch size 5,000; from the first stored offset to the last; best of {args.repeat} runs (the single "
        "broker's first, then the cluster's).",
        "",
        "| setup | consumer processes | events/s | vs 1 process, 3 brokers | vs 1 process, 1 broker (baseline) |",
        "|---|---|---|---|---|",
        f"| 1 node, replication 1 | 1 | {baseline:,.0f} | – | 1.00 |",
    ]
    for n in [int(x) for x in args.processes.split(",")]:
        rate = results[("cluster", n)]["rate"]
        lines.append(f"| 3 brokers, replication 3, min.insync 2 | {n} | {rate:,.0f} | {rate / one:.2f} | {rate / baseline:.2f} |")
    cdc_single, cdc_cluster = results[("single", "cdc")], results[("cluster", "cdc")]
    lines += [
        "",
        f"CDC reader, backlog of {args.cdc_rows:,} inserts, until the slot confirmed the last commit, "
        f"best of {args.repeat}:",
        "",
        "| setup | changes/s | vs 1 broker |",
        "|---|---|---|",
        f"| 1 node, replication 1, acks=all | {cdc_single:,.0f} | 1.00 |",
        f"| 3 brokers, replication 3, min.insync 2, acks=all | {cdc_cluster:,.0f} | {cdc_cluster / cdc_single:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    path = REPO_ROOT / "BENCHMARKS.md"
    current = path.read_text(encoding="utf-8")
    marker = "\n## Scale-out\n"
    if marker in current:
        head, rest = current.split(marker, 1)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        current = head.rstrip() + "\n" + tail
    path.write_text(current.rstrip() + "\n" + marker + "\n" + text.rstrip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
