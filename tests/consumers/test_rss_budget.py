"""Peak RSS of one ``insights consume scrape`` process stays within its budget.

Issue 17's target is 150 MB per process; it is NOT met yet, so this test guards what is
measured today against growth, not the target: 229-232 MB for one process on 30,000
generated events in batches of 5,000 (VmHWM, bench/ingest_compare.py; 200 MB for this
test's 15,000), of which
~108 MB is the process after start-up (imports: numpy 16 MB through cavro, cavro 7,
psycopg 11, confluent-kafka 7, ...) and ~120 MB the two batches the pipelined writer keeps
in flight (about 31 MB of Python objects per 5,000 events: rows hold 6 kB per event, the
Avro is 1.1 kB). Lower ``queued.max.messages.kbytes`` (8 MB) saved 7 MB, MALLOC_ARENA_MAX=2
nothing, batches of 2,000 44 MB at about a fifth of the events/s. Not importing the
schema-registry client without a registry (streams/serde/registry.py) took this test's
peak from 202 to 187 MB.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from core.settings import Settings
from insights.generate import Market, scrape_record
from tests.consumers.conftest import Topics, count, produce
from tests.consumers.procs import INSIGHTS, consumer_env

pytestmark = [pytest.mark.integration]

#: this test's 187 MB (cavro, the GC tuning and the lazy registry client included) plus a
#: margin; 40,000 events peaked at 248-249 MB before the lazy import (bench/ab_consumer.py).
#: The issue's target is 150
RSS_BUDGET_MB = 240
EVENTS = 15_000  # three batches of the default 5,000: two in flight at once, as in production


@pytest.mark.slow
def test_one_consumer_process_stays_within_its_rss_budget(
    settings: Settings, make_event_topics, pg: psycopg.Connection, pg_dsn: str, tmp_path: Path
) -> None:
    topics: Topics = make_event_topics(6)
    market = Market(2000, datetime(2026, 1, 1, tzinfo=UTC), seed=7, span=timedelta(days=29), events=EVENTS)
    records = [scrape_record(s) for s in market.scrapes(EVENTS)]
    assert produce(settings, topics.scrape, "product_scraped", records, key=lambda r: r["asin"].encode()) == EVENTS
    env = consumer_env(settings, pg_dsn, INSIGHTS_BATCH_SIZE="5000")
    log = tmp_path / "consumer.log"
    proc = subprocess.Popen(
        [INSIGHTS, "consume", "scrape", "--group", settings.consumer.group, "--exit-when-idle", "2"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    # VmHWM read while it lives, not ru_maxrss: Linux carries this (large) pytest process's
    # peak over fork and exec into the child's ru_maxrss (370 MB reported for a 200 MB child)
    peak_mb = 0.0
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            status = Path(f"/proc/{proc.pid}/status")
            try:
                hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
                peak_mb = max(peak_mb, int(hwm.split()[1]) / 1024)
            except (OSError, StopIteration):  # exited between poll() and the read
                pass
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, log.read_text()[-1500:]
    assert count(pg, "SELECT count(*) FROM product_snapshots") == EVENTS
    print(f"peak RSS of one consumer process: {peak_mb:.0f} MB (budget {RSS_BUDGET_MB})")
    assert peak_mb <= RSS_BUDGET_MB
