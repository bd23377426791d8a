"""``insights replay events`` against the real broker and database.

Every test runs the command as an operator would (a subprocess), beside a live consumer
group where the situation has one, and compares whole tables before and after.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from consumers.registry import build_loop
from streams.producer import EventProducer
from streams.replay_events import replay_group
from streams.serde import RecordContext, make_serializer
from tests.cli.helpers import run_cli
from tests.consumers.conftest import count, produce, run_until_idle
from tests.consumers.events import alert, scrape
from tests.fix_services import child_env
from tests.replay.tables import EVENT_TABLES, checksum, columns_except, copy_tables, only_in, table

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _offsets(pg: psycopg.Connection, group: str) -> dict[tuple[str, int], int]:
    rows = pg.execute(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", (group,)
    ).fetchall()
    return {(t, p): o for t, p, o in rows}


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_whole_topic_replay_beside_the_live_group_changes_nothing(settings, topics, pg, seed_rule):
    for rule in (1, 2, 3):
        seed_rule(rule)
    old = [scrape(n, seq) for n in range(40) for seq in range(8)]
    produce(settings, topics.scrape, "product_scraped", old)
    produce(settings, topics.alerts, "alert_triggered", [alert(1 + n % 3, n, seq, target=f"B{n:09d}")
                                                            for n in range(40) for seq in range(2)])
    live = settings.consumer.group  # one group, two sinks: their topics differ
    for name in ("scrape", "alerts"):
        run_until_idle(settings, name, idle=3.0)
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 320
    assert count(pg, "SELECT count(*) FROM alerts") == 80
    copy_tables(pg, "before")
    sums = {t: checksum(pg, table(t)) for t in EVENT_TABLES}

    # the live scrape group keeps consuming new products while the replays run
    stop = threading.Event()
    loop = build_loop(settings, "scrape", group=live, stop=stop)
    consumer = threading.Thread(target=loop.run, daemon=True)
    consumer.start()
    new = [scrape(n, seq) for n in range(1000, 1030) for seq in range(5)]

    def trickle() -> None:
        for i in range(0, len(new), 10):
            produce(settings, topics.scrape, "product_scraped", new[i : i + 10])
            time.sleep(0.05)

    producer = threading.Thread(target=trickle, daemon=True)
    producer.start()
    env = child_env(settings, INSIGHTS_BATCH_SIZE="64")
    out = _ok(run_cli("replay", "events", "scrape", env=env))
    assert "complete" in out
    read = int(out.split(" read,")[0].rsplit(" ", 1)[-1].replace(",", ""))
    assert read >= 320  # everything produced before it started, and new records only up to its fixed end
    out = _ok(run_cli("replay", "events", "alerts", env=env))
    assert "80 read" in out
    producer.join(60)

    end = 320 + len(new)
    deadline = time.monotonic() + 60
    def live_scrape() -> int:
        return sum(o for (t, _), o in _offsets(pg, live).items() if t == topics.scrape)

    while live_scrape() < end and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    consumer.join(30)
    assert live_scrape() == end

    # nothing stored before changed or went; what is new is exactly the new products' rows
    for t in EVENT_TABLES:
        assert only_in(pg, table(t, "before"), table(t)) == [], t
    added = {t: only_in(pg, table(t), table(t, "before")) for t in EVENT_TABLES}
    new_asins = {e.asin for e in new}
    assert len(added["products"]) == 30 and len(added["product_snapshots"]) == 150
    assert len(added["product_features"]) == 60
    assert added["alerts"] == [] and added["alert_rules"] == []
    for t in ("products", "product_snapshots", "product_features"):
        asin_at = columns_except(pg, t).index("asin")
        assert {row[asin_at] for row in added[t]} <= new_asins
    for t in EVENT_TABLES:  # old rows + exactly the new products' rows
        assert checksum(pg, table(t))[0] == sums[t][0] + len(added[t]), t
    for t in ("alerts", "alert_rules"):
        assert checksum(pg, table(t)) == sums[t]  # the alerts' counters were not counted twice

    # the replay's progress is its own; the live group's rows are the live group's
    replayed = _offsets(pg, replay_group(settings, "scrape"))
    assert {t for t, _ in replayed} == {topics.scrape} and sum(replayed.values()) == read
    assert "is complete" in _ok(run_cli("replay", "events", "scrape", env=env))
    dry = _ok(run_cli("replay", "events", "scrape", "--restart", "--dry-run", env=env))
    assert f"would read {end:,} event(s)" in dry and "partition" in dry
    assert _offsets(pg, replay_group(settings, "scrape")) == replayed  # a dry run writes nothing


def test_interrupted_replay_resumes_where_it_stopped(settings, topics, pg):
    events = [scrape(n, seq, features=1) for n in range(300) for seq in range(10)]
    produce(settings, topics.scrape, "product_scraped", events)
    env = child_env(settings, INSIGHTS_BATCH_SIZE="25", INSIGHTS_BATCH_WAIT_MS="10")
    group = replay_group(settings, "half")
    proc = subprocess.Popen(
        [sys.executable, "-m", "insights", "replay", "events", "scrape", "--name", "half"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while sum(_offsets(pg, group).values()) < 600 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, f"stdout:\n{out}\nstderr:\n{err}"
    assert "run the same command again to continue" in err
    first = sum(_offsets(pg, group).values())
    assert 600 <= first < 3000, "interrupt it halfway, not at the end"
    # no loss, nothing uncommitted: one snapshot per record below the stored progress
    assert count(pg, "SELECT count(*) FROM product_snapshots") == first

    assert "replay: half: " in err  # progress as log lines when stderr is not a terminal
    done = run_cli("replay", "events", "scrape", "--name", "half", env=env)
    again = _ok(done)
    assert "events/s" in done.stderr and "done in" in done.stderr
    assert f"resuming at {first:,} of 3,000" in again
    assert f"{3000 - first:,} read" in again  # continued, not restarted
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 3000
    assert count(pg, "SELECT count(DISTINCT event_id) FROM product_snapshots") == 3000
    assert sum(_offsets(pg, group).values()) == 3000

    # a rerun with another range is refused, not mixed with the stored one
    other = run_cli("replay", "events", "scrape", "--name", "half", "--partitions", "0", env=env)
    assert other.returncode == 1 and "--restart" in other.stderr


def _month_partition(pg: psycopg.Connection, month: datetime) -> str:
    row = pg.execute(
        """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'product_snapshots'::regclass
          AND pg_get_expr(c.relpartbound, c.oid) LIKE %s
        """,
        (f"%FROM ('{month:%Y-%m-%d}%",),
    ).fetchone()
    assert row is not None, f"no partition of product_snapshots for {month:%Y-%m}"
    return str(row[0])


def test_a_truncated_month_comes_back_from_a_time_range(settings, topics, pg):
    months = [datetime(2025, m, 1, tzinfo=UTC) for m in (3, 4, 5)]
    bounds = []
    for k, month in enumerate(months):
        bounds.append(datetime.now(UTC))
        produce(settings, topics.scrape, "product_scraped",
                [scrape(n, seq, at=month + timedelta(days=seq, minutes=n)) for n in range(30) for seq in range(6)])
        time.sleep(1.1)  # record times of one month's events apart from the next's
    bounds.append(datetime.now(UTC))
    run_until_idle(settings, "scrape", idle=3.0)
    april = _month_partition(pg, months[1])
    # id and created_at are the database's (identity, insert time), not the event's
    cols = columns_except(pg, april, "id", "created_at")
    copy_tables(pg, "before")
    want = checksum(pg, table(april), cols)
    assert want[0] == 180
    pg.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(april)))
    assert count(pg, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(april)).as_string(pg)) == 0

    env = child_env(settings)
    dry = _ok(run_cli("replay", "events", "scrape", "--name", "april", "--from-time", bounds[1].isoformat(),
                      "--to-time", bounds[2].isoformat(), "--dry-run", env=env))
    assert "would read 180 event(s)" in dry
    out = _ok(run_cli("replay", "events", "scrape", "--name", "april", "--from-time", bounds[1].isoformat(),
                      "--to-time", bounds[2].isoformat(), env=env))
    assert "180 read" in out
    assert checksum(pg, table(april), cols) == want
    for t in ("products", "product_features"):
        assert checksum(pg, table(t)) == checksum(pg, table(t, "before")), t
    snap_cols = columns_except(pg, "product_snapshots", "id", "created_at")
    whole = sql.SQL("(SELECT {} FROM {}) AS s")
    cols_sql = sql.SQL(", ").join(map(sql.Identifier, snap_cols))
    assert only_in(pg, whole.format(cols_sql, table("product_snapshots", "before")),
                   whole.format(cols_sql, table("product_snapshots"))) == []
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 540


def test_offset_and_partition_ranges(settings, topics, pg):
    # 10 records per partition, each partition chosen explicitly
    serialize = make_serializer(settings, "product_scraped")
    with EventProducer(settings) as producer:
        for p in range(3):
            for seq in range(10):
                event = scrape(100 + p, seq)
                producer.produce_event(topics.scrape, event.asin, serialize(event, RecordContext(topics.scrape)),
                                       partition=p)
    env = child_env(settings)
    args = ["replay", "events", "scrape", "--name", "some", "--partitions", "0,2",
            "--from-offset", "0:2", "--to-offset", "0:5", "--to-offset", "2:4"]
    dry = _ok(run_cli(*args, "--dry-run", env=env))
    assert "would read 7 event(s)" in dry  # partition 0: offsets 2-4; partition 2: 0-3; partition 1 left out
    out = _ok(run_cli(*args, env=env))
    assert "7 read, 7 stored" in out
    assert count(pg, "SELECT count(*) FROM product_snapshots") == 7
    assert _offsets(pg, replay_group(settings, "some")) == {(topics.scrape, 0): 5, (topics.scrape, 2): 4}
    bad = run_cli("replay", "events", "scrape", "--name", "x", "--from-offset", "7", env=env)
    assert bad.returncode == 2 and "PARTITION:OFFSET" in bad.stderr
