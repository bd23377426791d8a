"""A/B of one ``insights consume scrape`` process: another tree's code against this one, interleaved.

    git archive <commit> | tar -x -C /tmp/base
    PYTHONPATH=. .venv/bin/python bench/ab_consumer.py /tmp/base [--events 40000] [--rounds 4]

Both run with this tree's venv (the other tree's code first on ``sys.path``), on one topic,
each run into a fresh database, the order alternating per round; rate, client and backend
CPU per event and peak RSS as bench/ingest_compare.py measures them (each process's start-up
CPU measured on an empty topic just before and subtracted). Not for dependency changes the
venv does not have: both trees import from it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest_compare as ic  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from consume_scrape import create_database, drop_database, produce_events  # noqa: E402

from core.settings import load_settings  # noqa: E402
from streams.topics import dlq_name  # noqa: E402


def argv_for(tree: str) -> list[str]:
    code = f"import sys; sys.path.insert(0, {tree!r}); sys.argv[0] = 'insights'; from insights.cli.main import run; run()"
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="a tree of the code to compare (e.g. from git archive)")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    trees = {"base": str(Path(args.base).resolve()), "this": str(Path(__file__).resolve().parents[1])}
    settings = load_settings()
    admin_dsn = settings.pg.conninfo(dbname="postgres")
    tag = uuid.uuid4().hex[:8]
    work = settings.replace(topic_prefix=f"ab{tag}", batch_size=5000, batch_wait_ms=100, metrics_port=0)
    idle_settings = work.replace(topic_prefix=f"ab{tag}idle")
    topic, idle_topic = work.kafka.topic("events.product_scraped"), idle_settings.kafka.topic("events.product_scraped")
    topics = [topic, dlq_name(topic), idle_topic, dlq_name(idle_topic)]
    admin = AdminClient(work.kafka.client_config())
    for name in topics:
        parts = 1 if name in (dlq_name(topic), dlq_name(idle_topic)) else 6
        admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(30)
    logs = Path(tempfile.mkdtemp(prefix="insights-ab-"))
    results: dict[str, list[dict]] = {name: [] for name in trees}
    try:
        produce_events(work, topic, args.events, 5000)
        for rnd in range(args.rounds):
            for name in list(trees) if rnd % 2 == 0 else list(trees)[::-1]:
                ic.CONSUMER_ARGV = argv_for(trees[name])
                idle = ic.idle_cpu(idle_settings, admin_dsn, 1, logs)
                db = f"ab_{tag}_{uuid.uuid4().hex[:6]}"
                dsn = create_database(admin_dsn, db)
                try:
                    out = ic.project_run(work, admin_dsn, db, dsn, args.events, 1, logs, idle)
                finally:
                    drop_database(admin_dsn, db)
                results[name].append(out)
                print(f"round {rnd + 1} {name:5s} {out['rate']:7,.0f} events/s, client {out['client_us']:4.0f} us, "
                      f"backend {out['backend_us']:3.0f} us, peak RSS {out['rss_mb'][0]:.0f} MB "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        for future in admin.delete_topics(topics).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass
    for name, runs in results.items():
        print(f"{name}: median {statistics.median(r['rate'] for r in runs):,.0f} events/s, client "
              f"{statistics.median(r['client_us'] for r in runs):.0f} us, backend "
              f"{statistics.median(r['backend_us'] for r in runs):.0f} us, peak RSS "
              f"{statistics.median(r['rss_mb'][0] for r in runs):.0f} MB")


if __name__ == "__main__":
    main()
