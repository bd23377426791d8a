"""Benchmark: replay throughput from a topic and from an archive, beside the live consumer's rate.

    PYTHONPATH=. .venv/bin/python bench/replay_throughput.py --events 30000 [--write]

In one run, on the same generated events (``insights.generate.Market``, produced to a
fresh topic, not timed), each into a freshly migrated database of its own:

1. **live**: the `scrape` consumer loop (what `insights consume scrape` runs), from its
   first batch to its last commit; run again at the end (step 5) into another database,
   so the replays are compared with the live rate before and after them;
2. **replay from the topic**: `insights replay events scrape`'s loop (``RangeLoop``, the
   whole topic as the range) into an empty database;
3. **replay over stored rows**: the same replay into the live run's database, which holds
   every row already (the bug-fix situation: nothing changes, every row is compared);
4. **replay from an archive**: `insights archive export` of the topic (timed apart), then
   `replay events --from-archive`'s loop (``ArchiveLoop``) into an empty database.
5. **live** once more.

Prints events/s and the ratio of each replay to the live rate (target: at least 1.0);
``--write`` replaces the ``## Replay`` section of BENCHMARKS.md. Everything it creates
(four databases, the topic and its DLQ, the archive) is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka.admin import AdminClient, NewTopic

from bench.consume_scrape import create_database, drop_database, machine_facts, produce_events
from consumers.registry import build_loop
from core.paths import REPO_ROOT
from core.settings import Settings, load_settings
from streams.archive import archived_records, export_records
from streams.kafka import admin_client
from streams.replay_events import ArchiveLoop, RangeLoop, RangeRequest, compute_ranges, plan_replay
from streams.topics import dlq_name


def _with_db(settings: Settings, name: str) -> Settings:
    return settings.replace(pg_dsn=psycopg.conninfo.make_conninfo(settings.pg.dsn, dbname=name))


def _clock(loop: Any) -> float:
    """First batch to last commit, for every loop alike (group joins and connects left out)."""
    assert loop.first_batch_at is not None and loop.writer.last_commit_at is not None
    return float(loop.writer.last_commit_at - loop.first_batch_at)


def timed_live(settings: Settings) -> tuple[float, int]:
    loop = build_loop(settings, "scrape", idle_exit_after=3.0)
    totals = loop.run()
    return _clock(loop), totals.consumed


def timed_replay(settings: Settings, topic: str, name: str) -> tuple[float, int]:
    plan = plan_replay(settings, "scrape", [topic], RangeRequest(), name=name)
    loop = build_loop(settings, "scrape", group=plan.group, loop_class=RangeLoop, ranges=plan.ranges)
    totals = loop.run()
    assert isinstance(loop, RangeLoop) and loop.completed
    return _clock(loop), totals.consumed


def timed_archive_replay(settings: Settings, directory: Path) -> tuple[float, int]:
    files = archived_records(directory)
    loop = build_loop(settings, "scrape", group=f"{settings.consumer.group}.replay.bench-archive",
                      loop_class=ArchiveLoop, directory=directory, files=files)
    totals = loop.run()
    assert isinstance(loop, ArchiveLoop) and loop.completed
    return _clock(loop), totals.consumed


def write_section(text: str) -> None:
    path = REPO_ROOT / "BENCHMARKS.md"
    current = path.read_text(encoding="utf-8")
    marker = "\n## Replay\n"
    if marker in current:
        head, rest = current.split(marker, 1)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        current = head.rstrip() + "\n" + tail
    path.write_text(current.rstrip() + "\n" + marker + text.rstrip() + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--products", type=int, default=3_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--write", action="store_true", help="replace the ## Replay section of BENCHMARKS.md")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    tag = uuid.uuid4().hex[:10]
    base = load_settings()
    admin_dsn = base.pg.conninfo(dbname="postgres")
    names = {k: f"bench_replay_{k}_{tag}" for k in ("live", "topic", "archive", "live2")}
    settings = load_settings(
        topic_prefix=f"bench{tag}", consumer_group=f"bench-{tag}", metrics_port=0,
        batch_size=args.batch_size, batch_wait_ms=100,
    )
    topic = settings.kafka.topic("events.product_scraped")
    admin = AdminClient(settings.kafka.client_config())
    workdir = Path(tempfile.mkdtemp(prefix="insights-bench-archive-"))
    results: dict[str, tuple[float, int]] = {}
    try:
        for name, parts in ((topic, args.partitions), (dlq_name(topic), 1)):
            admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(30)
        for name in names.values():
            create_database(admin_dsn, name)
        produce_s = produce_events(settings, topic, args.events, args.products)
        print(f"produced {args.events} events in {produce_s:.1f}s", flush=True)

        results["live"] = timed_live(_with_db(settings, names["live"]))
        results["topic"] = timed_replay(_with_db(settings, names["topic"]), topic, "bench")
        results["stored"] = timed_replay(_with_db(settings, names["live"]), topic, "bench-again")
        started = time.perf_counter()
        ranges = compute_ranges(admin_client(settings.kafka), [topic], RangeRequest(), "")
        export_records(settings, workdir, ranges, value_subject="product_scraped")
        export_s = time.perf_counter() - started
        results["archive"] = timed_archive_replay(_with_db(settings, names["archive"]), workdir)
        # the live loop once more, last, under a group of its own: the load moves during a run,
        # so the replays are compared with the live rate measured before and after them
        results["live2"] = timed_live(_with_db(settings.replace(consumer_group=f"bench-{tag}-2"), names["live2"]))
        size = sum(p.stat().st_size for p in workdir.glob("*.avro"))
        for key, (seconds, n) in results.items():
            if n != args.events:
                raise SystemExit(f"{key}: {n} events consumed, expected {args.events}")
            print(f"{key}: {n} events in {seconds:.2f}s = {n / seconds:,.0f} events/s", flush=True)
        print(f"archive export: {args.events} events in {export_s:.2f}s, {size / 2**20:.1f} MiB", flush=True)
        if args.write:
            write_section(report(args, settings, results, export_s, size, load_at_start))
    finally:
        for name in names.values():
            drop_database(admin_dsn, name)
        for future in admin.delete_topics([topic, dlq_name(topic)]).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass
        shutil.rmtree(workdir, ignore_errors=True)


def report(args: argparse.Namespace, settings: Settings, results: dict[str, tuple[float, int]], export_s: float,
           size: int, load_at_start: tuple[float, float, float]) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT).stdout.strip()
    live_rate = (args.events / results["live"][0] + args.events / results["live2"][0]) / 2
    rows = [
        ("live", "`scrape` consumer loop (`insights consume scrape`), Kafka -> empty database (first)"),
        ("topic", "`insights replay events scrape` (whole topic), Kafka -> empty database"),
        ("stored", "`insights replay events scrape` (whole topic) into the live run's database (every row there already)"),
        ("archive", "`insights replay events scrape --from-archive`, archive files -> empty database"),
        ("live2", "`scrape` consumer loop again, Kafka -> empty database (last)"),
    ]
    lines = "\n".join(
        f"| {what} | {results[k][0]:.2f} s | **{args.events / results[k][0]:,.0f} events/s** | "
        f"{(args.events / results[k][0]) / live_rate:.2f} |"
        for k, what in rows
    )
    return f"""
Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit `{rev}` with

    PYTHONPATH=. .venv/bin/python bench/replay_throughput.py --events {args.events} --products {args.products} --batch-size {args.batch_size} --write

Machine: {machine_facts(settings.pg.conninfo())}; load average at the start
{' / '.join(f'{x:.2f}' for x in load_at_start)} (1 / 5 / 15 min). The cores are shared with Kafka,
PostgreSQL and other sessions' work; the five runs are sequential in one process, so they
share whatever load there was. Every rate is from the loop's first batch to its last
commit (connecting, joining the group and loading offsets left out, for all alike).

{args.events:,} generated ProductScraped events, {args.partitions} partitions, batches of {args.batch_size}.
Target: every replay at least the live rate (ratio >= 1.0).

Ratios are to the mean of the two live runs ({live_rate:,.0f} events/s).

| what | time | rate | ratio to live |
|---|---|---|---|
{lines}

Archive export (not part of the replay rate): {export_s:.2f} s, {size / 2**20:.1f} MiB of deflate-compressed
container files for {args.events:,} events.
"""


if __name__ == "__main__":
    sys.exit(main())
