"""Benchmark: what pgaudit costs the ingest path (the seed's 'all' vs the stack's default vs none).

    PYTHONPATH=. .venv/bin/python bench/audit_cost.py --events 50000 [--rounds 2]

1. Starts a PRIVATE PostgreSQL cluster in a temporary directory on a free port, made by the
   stack's own code (so pgaudit is preloaded exactly as `insights stack up` does it).
2. Produces ``--events`` ProductScraped events once to a fresh topic on the configured Kafka.
3. For each round and each setting (``none``, ``ddl, role`` = the default, ``all`` = the
   seed's), in turn: a freshly migrated database with ``ALTER DATABASE ... SET pgaudit.log``,
   and the scrape consumer loop (the code ``insights consume scrape`` runs) reading the whole
   topic under its own group, timed from its first batch to its last commit.
4. Prints events/s per setting and the ratio to ``none`` measured in the same run, and the
   bytes of server log each setting wrote.

Everything it creates (the cluster, the topic) is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.consume_scrape import produce_events  # noqa: E402
from consumers.registry import build_loop  # noqa: E402
from core.settings import load_settings  # noqa: E402
from insights.db.migrations import migrate  # noqa: E402
from insights.stack.postgres import LocalPostgres, pgaudit_available  # noqa: E402
from streams.topics import dlq_name  # noqa: E402

SETTINGS = {"none": "none", "default": "ddl, role", "all": "all"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not pgaudit_available():
        raise SystemExit("postgresql-15-pgaudit is not installed (insights stack up installs it)")

    load_at_start = os.getloadavg()
    tag = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="insights-audit-bench-"))
    root.chmod(0o755)
    port = free_port()
    base = load_settings(stack_dir=root, stack_pg_port=port, topic_prefix=f"auditbench{tag}", metrics_port=0,
                         pg_dsn=f"postgresql://insights@127.0.0.1:{port}/insights", batch_wait_ms=100)
    pg = LocalPostgres(base)
    topic = base.kafka.topic("events.product_scraped")
    admin = AdminClient(base.kafka.client_config())
    results: dict[str, list[float]] = {name: [] for name in SETTINGS}
    log_bytes: dict[str, list[int]] = {name: [] for name in SETTINGS}
    try:
        pg.up()
        for name, parts in ((topic, 6), (dlq_name(topic), 1)):
            admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(30)
        produce_s = produce_events(base, topic, args.events, args.products)
        print(f"produced {args.events} events in {produce_s:.1f}s", flush=True)
        for rnd in range(args.rounds):
            for name, value in SETTINGS.items():
                db = f"audit_{name}_{rnd}"
                with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
                    conn.execute(sql.SQL("ALTER DATABASE {} SET pgaudit.log = {}").format(
                        sql.Identifier(db), sql.Literal(value)))
                dsn = f"postgresql://insights@127.0.0.1:{port}/{db}"
                migrate(dsn)
                settings = base.replace(pg_dsn=dsn, consumer_group=f"auditbench-{tag}-{name}-{rnd}")
                before = pg.paths.log.stat().st_size
                loop = build_loop(settings, "scrape", idle_exit_after=3.0)
                totals = loop.run()
                first, last = loop.first_batch_at, loop.writer.last_commit_at
                assert first is not None and last is not None
                if totals.consumed != args.events or totals.dead_letters:
                    raise SystemExit(f"{name}: consumer saw {totals.consumed} events, {totals.dead_letters} DLQ")
                rate = args.events / (last - first)
                results[name].append(rate)
                log_bytes[name].append(pg.paths.log.stat().st_size - before)
                print(f"round {rnd + 1} pgaudit.log={value!r}: {rate:,.0f} events/s, "
                      f"server log +{log_bytes[name][-1]:,} bytes", flush=True)
        none = statistics.median(results["none"])
        print()
        print(f"machine: {platform.platform()}, nproc {os.cpu_count()}, load at start "
              f"{load_at_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}; {args.events} events, "
              f"{args.rounds} rounds")
        print("| pgaudit.log | events/s (median of rounds) | runs | ratio to none | server log per event |")
        print("|---|---|---|---|---|")
        for name, value in SETTINGS.items():
            med = statistics.median(results[name])
            runs = ", ".join(f"{r:,.0f}" for r in results[name])
            per_event = statistics.median(log_bytes[name]) / args.events
            print(f"| `{value}` | {med:,.0f} | {runs} | {med / none:.2f} | {per_event:,.0f} bytes |")
    finally:
        try:
            pg.down("immediate")
        except Exception:  # noqa: BLE001 - cleanup is best effort
            pass
        for future in admin.delete_topics([topic, dlq_name(topic)]).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"({time.time() - started:.0f}s)")
