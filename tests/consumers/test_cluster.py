"""Done-when #2: three consumer processes share six partitions; one is SIGKILLed mid-batch."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from core.settings import Settings
from tests.consumers.conftest import Topics, count, produce
from tests.consumers.events import scrape
from tests.consumers.procs import consumer_env, start_consumer, terminate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCTS = 300
SCRAPES = 40


def wait_for_count(conn: psycopg.Connection, query: str, predicate, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    value = -1
    while time.monotonic() < deadline:
        value = count(conn, query)
        if predicate(value):
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out; last value {value}")


def test_sigkill_one_of_three_consumers_then_restart_stores_every_event_once(
    settings: Settings, make_event_topics, pg: psycopg.Connection, pg_dsn: str, tmp_path: Path
) -> None:
    topics: Topics = make_event_topics(6)
    total = PRODUCTS * SCRAPES
    produce(settings, topics.scrape, "product_scraped", [scrape(n, s, features=1) for s in range(SCRAPES) for n in range(PRODUCTS)])
    env = consumer_env(settings, pg_dsn, INSIGHTS_BATCH_SIZE="100", INSIGHTS_BATCH_WAIT_MS="50")
    group = settings.consumer.group
    procs = [start_consumer("scrape", env, group, tmp_path / f"c{i}.log") for i in range(3)]
    try:
        snapshots = "SELECT count(*) FROM product_snapshots"
        # kill a member while the group is busy writing: well after the start, far from the end
        seen = wait_for_count(pg, snapshots, lambda v: v >= total // 5, timeout=120)
        assert seen < total, "the consumers finished before the kill; raise the event count"
        victim = procs[0]
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        at_kill = count(pg, snapshots)
        procs[0] = start_consumer("scrape", env, group, tmp_path / "c0-restarted.log")

        wait_for_count(pg, snapshots, lambda v: v >= total, timeout=180)
        time.sleep(2)  # anything still in flight would show up as an excess now
        assert at_kill < total
        assert count(pg, snapshots) == total
        assert count(pg, "SELECT count(DISTINCT event_id) FROM product_snapshots") == total
        assert count(pg, "SELECT count(*) FROM products") == PRODUCTS
        assert count(pg, "SELECT count(*) FROM product_features") == PRODUCTS
        newest = scrape(0, SCRAPES - 1).scraped_at
        assert count(pg, "SELECT count(*) FROM products WHERE last_scraped_at = %s", newest) == PRODUCTS
        stored = dict(pg.execute(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", (group,)
        ).fetchall())
        assert sorted(stored) == list(range(6)) and sum(stored.values()) == total
    finally:
        codes = [terminate(p) for p in procs]
    # SIGTERM: finish the batch, commit, leave the group, exit 0
    assert codes == [0, 0, 0], [(tmp_path / f).read_text()[-2000:] for f in ("c1.log", "c2.log")]
