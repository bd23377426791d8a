"""Failover during ingest: nothing lost, nothing twice, the CDC stream resynced, summaries right.

A private primary with one streaming replica; real processes throughout: ``insights consume
scrape`` and ``insights consume summaries`` with a multi-host write DSN, ``insights cdc run``,
``insights stack failover``, ``insights cdc resync``. The replica is cut off from the primary
first (as a broken network would), so the primary commits transactions the replica never
receives: after the failover those commits are gone from the database, and

* the scrape consumer (never restarted) finds PostgreSQL's offsets behind what it stored,
  re-reads the lost events from Kafka and stores every event exactly once;
* the CDC reader stops, and a restarted one refuses to run without its slot (exit 3, naming
  ``insights cdc resync``) instead of silently streaming from a new one;
* changes the old primary published and lost (a phantom product, a phantom brand) reached
  the summaries; after ``cdc resync`` the summaries equal the refreshed view on the new
  primary, phantoms gone, with the summaries consumer never restarted.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from insights.ops.failover import cut_replication
from streams.topics import dlq_name, event_topics
from tests.consumers.conftest import produce
from tests.consumers.events import asin, scrape
from tests.consumers.procs import INSIGHTS, consumer_env, start_consumer, terminate
from tests.fix_services import child_env
from tests.ops.conftest import PrivateCluster, scalar, wait_until
from tests.summaries.conftest import SUMMARY_QUERY, VIEW_QUERY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCTS = 100
SNAPSHOTS = "SELECT count(*) FROM product_snapshots"


def _phase(settings: Any, topic: str, seqs: range) -> int:
    return produce(settings, topic, "product_scraped", [scrape(n, s, features=1) for s in seqs for n in range(PRODUCTS)])


def _reader(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - closed with the process by the OS
    return subprocess.Popen([INSIGHTS, "cdc", "run"], env=env, stdout=handle, stderr=subprocess.STDOUT)


def _rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params or None).fetchall()


def _summaries_match_view(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("REFRESH MATERIALIZED VIEW product_summary_view")
        view = conn.execute(VIEW_QUERY).fetchall()
        summaries = conn.execute(SUMMARY_QUERY).fetchall()
    return bool(view) and view == summaries


def test_failover_mid_ingest_loses_nothing_and_cdc_resync_repairs_the_summaries(
    make_cluster, kafka_bootstrap: str, make_topic, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    private: PrivateCluster = make_cluster(1)
    tag = uuid.uuid4().hex[:10]
    settings = private.settings.replace(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{tag}",
        consumer_group=f"g{tag}",
        cdc_slot_name=f"fo_{tag}",
        cdc_publication=f"fo_{tag}",
        cdc_tables=["products", "product_snapshots", "alerts"],
        cdc_heartbeat_interval_s=1.0,
        cdc_status_interval_s=0.2,
        cdc_standby_retry_s=0.5,
    )
    private.settings = settings
    scrape_topic = next(s.name for s in event_topics(settings) if s.value_subject == "product_scraped")
    make_topic(name=scrape_topic, partitions=3)
    make_topic(name=dlq_name(scrape_topic), partitions=1)
    cluster = private.refresh()
    old, (replica,) = cluster.primary, cluster.replicas()
    group = settings.consumer.group
    write_dsn = settings.pg.dsn
    assert "target_session_attrs=read-write" in write_dsn and f"{replica.port}" in write_dsn
    env = consumer_env(settings, write_dsn, INSIGHTS_BATCH_SIZE="100", INSIGHTS_BATCH_WAIT_MS="50")
    reader_env = child_env(settings, INSIGHTS_METRICS_PORT="0")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["reader"] = _reader(reader_env, tmp_path / "reader.log")
        wait_until(lambda: scalar(old.dsn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                                  settings.cdc.slot_name), 60, "the CDC reader to stream")
        procs["scrape"] = start_consumer("scrape", env, group, tmp_path / "scrape.log")
        procs["summaries"] = start_consumer("summaries", env, f"{group}.summaries", tmp_path / "summaries.log")

        # phase 1: replicated
        total = _phase(settings, scrape_topic, range(0, 2))
        wait_until(lambda: scalar(old.dsn, SNAPSHOTS) == total, 120, "phase 1 stored")
        wait_until(lambda: scalar(replica.dsn, SNAPSHOTS) == total, 30, "phase 1 replicated")
        wait_until(lambda: scalar(old.dsn, "SELECT count(*) FROM summaries.product_summary") == PRODUCTS, 60,
                   "the summaries of phase 1")

        # phase 2: the replica is cut off; these commits exist on the old primary only
        cut_replication(replica)
        total += _phase(settings, scrape_topic, range(2, 4))
        wait_until(lambda: scalar(old.dsn, SNAPSHOTS) == total, 120, "phase 2 stored on the old primary")
        with psycopg.connect(old.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO products (asin, title, brand) VALUES ('PHANTOM01', 'Phantom', 'Ghost')")
            conn.execute("UPDATE products SET brand = 'PHANTOM' WHERE asin = %s", (asin(PRODUCTS - 1),))
        wait_until(
            lambda: scalar(old.dsn, "SELECT count(*) FROM summaries.product_summary "
                                    "WHERE asin = 'PHANTOM01' OR brand = 'PHANTOM'") == 2,
            60, "the phantom changes to reach the summaries",
        )
        assert scalar(replica.dsn, SNAPSHOTS) == 200  # the replica has phase 1 only

        # phase 3 in flight, then the failover
        total += _phase(settings, scrape_topic, range(4, 6))
        failover = private.cli("stack", "failover", "--yes", timeout=180)
        assert failover.returncode == 0, failover.stderr + failover.stdout
        flat = " ".join(failover.stdout.split())
        assert f"promoted {replica.spec.name}" in flat and "retired pg" in flat
        assert "insights cdc resync" in failover.stderr
        assert not old.paths.root.exists()  # retired: nothing can start it again
        new = private.refresh().primary
        assert new.port == replica.port and scalar(new.dsn, "SELECT pg_is_in_recovery()") is False

        # the reader lost its server; it stops loudly, and a new one refuses to stream without its slot
        code = procs["reader"].wait(60)
        said = " ".join((tmp_path / "reader.log").read_text().split())
        print(f"running reader: exit {code}; its last words: {said[-600:]}")
        assert code == 3 and "insights cdc resync" in said, (code, said[-2000:])
        again = subprocess.run([INSIGHTS, "cdc", "run"], env=reader_env, capture_output=True, text=True, timeout=120)
        message = " ".join(again.stderr.split())
        assert again.returncode == 3, again.stderr
        assert f"replication slot {settings.cdc.slot_name!r} does not exist" in message
        assert "timeline 2" in message and "insights cdc resync" in message

        # every event exactly once on the new primary, with no consumer restarted
        wait_until(lambda: scalar(new.dsn, SNAPSHOTS) == total, 180, "every event on the new primary")
        time.sleep(2)  # anything stored twice would show now
        assert scalar(new.dsn, SNAPSHOTS) == total
        assert scalar(new.dsn, "SELECT count(DISTINCT event_id) FROM product_snapshots") == total
        assert scalar(new.dsn, "SELECT count(*) FROM products") == PRODUCTS  # the phantom insert is gone
        newest = scrape(0, 5).scraped_at
        assert scalar(new.dsn, "SELECT count(*) FROM products WHERE last_scraped_at = %s", newest) == PRODUCTS
        stored = _rows(new.dsn, "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = %s", group)
        assert sorted(p for p, _ in stored) == [0, 1, 2] and sum(o for _, o in stored) == total
        assert procs["scrape"].poll() is None and procs["summaries"].poll() is None
        assert "offsets in PostgreSQL are behind" in (tmp_path / "scrape.log").read_text()

        # resync: new slot, every row re-published, summaries rebuilt from them
        resync = private.cli("cdc", "resync", "--yes", timeout=180)
        assert resync.returncode == 0, resync.stderr + resync.stdout
        assert f"{PRODUCTS} rows" in resync.stdout
        procs["reader"] = _reader(reader_env, tmp_path / "reader-2.log")
        wait_until(lambda: _summaries_match_view(new.dsn), 120, "summaries equal to the refreshed view")
        assert scalar(new.dsn, "SELECT count(*) FROM summaries.product_summary "
                               "WHERE asin = 'PHANTOM01' OR brand = 'PHANTOM'") == 0
        assert procs["summaries"].poll() is None  # rebuilt while running
        # and the stream goes on from the new slot
        with psycopg.connect(new.dsn, autocommit=True) as conn:
            conn.execute("UPDATE products SET title = 'after resync' WHERE asin = %s", (asin(7),))
        wait_until(
            lambda: scalar(new.dsn, "SELECT title FROM summaries.product_summary WHERE asin = %s", asin(7))
            == "after resync", 60, "a change after the resync to reach the summaries",
        )
    except BaseException:
        for log in sorted(tmp_path.glob("*.log")):  # shown by pytest with the failure
            print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        raise
    finally:
        codes = {name: terminate(p) for name, p in procs.items()}
        _delete_prefixed_topics(kafka_bootstrap, settings.kafka.topic_prefix)
    assert codes == {"reader": 0, "scrape": 0, "summaries": 0}, codes


def _delete_prefixed_topics(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    mine = [t for t in admin.list_topics(timeout=15).topics if t.startswith(prefix + ".")]
    for future in admin.delete_topics(mine).values() if mine else []:
        try:
            future.result(timeout=30)
        except Exception:
            pass

