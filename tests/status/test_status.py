"""``insights status`` on the real broker and database: exit codes, DLQ depth, lag, outages, rendering."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from confluent_kafka import Producer

from core.settings import Settings
from insights.status import Report, gather
from streams.dlq import H_ERROR_CLASS
from streams.producer import EventProducer
from streams.replay import replay_dlq
from streams.topics import dlq_name, event_topics
from tests.consumers.conftest import produce, run_until_idle
from tests.consumers.events import scrape
from tests.status.conftest import cli, closed_port

pytestmark = pytest.mark.integration


def _scrape_topic(settings: Settings) -> str:
    return next(s.name for s in event_topics(settings) if s.key == "product_scraped")


def _row(report: Report, area: str, name: str):  # type: ignore[no-untyped-def]
    found = [c for c in report.checks if c.area == area and c.name == name]
    assert len(found) == 1, (area, name, [(c.area, c.name) for c in report.checks])
    return found[0]


def _not_ok(report: Report) -> list[tuple[str, str, str, str]]:
    return [(c.state, c.area, c.name, c.reason) for c in report.checks if c.state != "ok"]


def _poison(settings: Settings, topic: str, n: int) -> None:
    producer = Producer(settings.kafka.client_config())
    for i in range(n):
        producer.produce(topic, key=f"poison-{i}".encode(), value=b"\x00not avro at all")
    assert producer.flush(30) == 0


def test_clean_consume_is_ok_poison_shows_depth_replay_and_purge_bring_it_back(
    slot_settings: Settings, all_topics: list[str]
) -> None:
    settings = slot_settings
    topic = _scrape_topic(settings)
    dlq = dlq_name(topic)
    produce(settings, topic, "product_scraped", [scrape(n, 0) for n in range(12)])
    run_until_idle(settings, "scrape", idle=2)

    clean = gather(settings)
    assert _not_ok(clean) == [] and clean.exit_code == 0
    consumer = _row(clean, "consumers", f"{settings.consumer.group}/{topic}")
    assert consumer.metrics["lag_records"] == 0 and consumer.metrics["lag_seconds"] == 0
    assert _row(clean, "dlq", dlq).metrics["depth"] == 0
    run = cli(settings, "status")
    assert run.code == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().endswith("OK (exit 0)")

    _poison(settings, topic, 2)
    run_until_idle(settings, "scrape", idle=2)
    poisoned = gather(settings)
    row = _row(poisoned, "dlq", dlq)
    assert row.metrics["depth"] == 2 and row.metrics["written"] == 2
    # below INSIGHTS_STATUS_DLQ_DEPTH_WARN (100 by default) the depth is reported, not alarmed
    assert row.state == "ok" and "2 dead letter(s) pending" in row.reason
    strict = gather(settings.replace(status_dlq_depth_warn=1, status_dlq_depth_fail=5))
    assert _row(strict, "dlq", dlq).state == "warn" and strict.exit_code == 1
    run = cli(settings, "status", INSIGHTS_STATUS_DLQ_DEPTH_WARN="1")
    assert run.code == 1, run.stdout
    assert any(line.split()[:3] == ["warn", "dlq", dlq] for line in run.stdout.splitlines()), run.stdout

    dry = cli(settings, "replay", "dlq", "--topic", topic, "--dry-run")
    assert dry.code == 0, dry.stderr
    # the poison's schema id is one nobody knows: re-sending it can only fail again
    assert f"2 record(s) pending in {dlq}" in dry.stdout and "would replay 0" in dry.stdout
    assert "would skip 2 record(s) that cannot succeed again (unknown_schema: 2)" in dry.stdout
    assert _row(gather(settings), "dlq", dlq).metrics["depth"] == 2  # a dry run changes nothing

    report = replay_dlq(settings, topic)
    assert (report.pending, report.replayed, report.remaining) == (2, 0, 0)
    assert report.skipped == {"unknown_schema": 2}
    replayed = _row(gather(settings), "dlq", dlq)
    assert replayed.metrics == {"depth": 0, "written": 2, "purged": 0, "replayed": 2}
    assert replayed.state == "ok"

    # a new dead letter counts once: the two replayed ones are not counted again
    with EventProducer(settings) as producer:
        producer.produce_event(dlq, b"k", b"v", [(H_ERROR_CLASS, b"validation")])
    assert _row(gather(settings), "dlq", dlq).metrics["depth"] == 1

    # destructive: not without --yes when nobody can be asked (stdin is not a terminal here)
    refused = cli(settings, "replay", "purge", "--topic", topic)
    assert refused.code == 2 and "pass --yes" in refused.stderr and "Traceback" not in refused.stderr
    assert _row(gather(settings), "dlq", dlq).metrics["depth"] == 1
    purged = cli(settings, "replay", "purge", "--topic", topic, "--yes")
    assert purged.code == 0, purged.stderr
    assert f"purged 3 record(s) from {dlq} (1 not replayed)" in purged.stdout
    after = _row(gather(settings), "dlq", dlq)
    assert after.metrics == {"depth": 0, "written": 3, "purged": 3, "replayed": 0}
    # nothing left to replay after a purge, and a replay does not start below the log start
    assert replay_dlq(settings, topic, dry_run=True).pending == 0


def test_stopped_consumer_with_lag_beyond_the_threshold_exits_non_zero_with_the_reason(
    slot_settings: Settings, all_topics: list[str]
) -> None:
    settings = slot_settings
    topic = _scrape_topic(settings)
    produce(settings, topic, "product_scraped", [scrape(n, 0) for n in range(5)])
    run_until_idle(settings, "scrape", idle=2)
    # the consumer is stopped; 30 more records arrive
    produce(settings, topic, "product_scraped", [scrape(n, 1) for n in range(30)])
    name = f"{settings.consumer.group}/{topic}"

    default = gather(settings)
    assert _row(default, "consumers", name).metrics["lag_records"] == 30
    assert default.exit_code == 0  # 30 is well under the default 10,000

    run = cli(settings, "status", INSIGHTS_STATUS_LAG_RECORDS_WARN="20", INSIGHTS_STATUS_LAG_RECORDS_FAIL="1000")
    assert run.code == 1, run.stdout + run.stderr
    line = next(l for l in run.stdout.splitlines() if l.split()[:3] == ["warn", "consumers", name])
    assert "lag 30 record(s)" in line and "no active member" in line and "threshold records warn at 20" in line

    run = cli(settings, "status", "--json", INSIGHTS_STATUS_LAG_RECORDS_WARN="10", INSIGHTS_STATUS_LAG_RECORDS_FAIL="25")
    assert run.code == 2
    doc = run.json()
    assert doc["state"] == "fail" and doc["exit_code"] == 2
    row = next(c for c in doc["checks"] if c["area"] == "consumers" and c["name"] == name)
    assert row["state"] == "fail" and row["metrics"]["lag_records"] == 30 and row["metrics"]["members"] == 0
    assert isinstance(row["metrics"]["lag_seconds"], float)

    # lag in seconds: the oldest record waiting is read, not guessed
    time.sleep(2.0)
    aged = gather(settings.replace(status_lag_seconds_warn=1.0, status_lag_seconds_fail=3600))
    row = _row(aged, "consumers", name)
    assert row.state == "warn" and 2.0 <= row.metrics["lag_seconds"] < 60, row
    assert "threshold seconds warn at 1" in row.reason


def test_kafka_down_answers_fast_with_unknown_and_prints_no_librdkafka_lines(
    settings: Settings, pg_dsn: str
) -> None:
    # a slot name of its own: the shared cluster's slots (a demo's, idle) are not this test's
    down = settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{closed_port()}", status_slot_required=False,
                            cdc_slot_name=f"nosuch_{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    report = gather(down)
    # refused everywhere: librdkafka says all brokers are down, nobody waits the full timeout
    assert time.monotonic() - started < down.status.timeout_s + 2
    assert report.exit_code == 3

    # the CLI: the same, plus interpreter start and imports (seconds on a busy 2-core runner)
    startup = cli(down, "status", "--help")
    run = cli(down, "status")
    assert run.seconds < 10 or run.seconds - startup.seconds < 5, (run.seconds, startup.seconds)
    assert run.code == 3, run.stdout + run.stderr
    assert "%3|" not in run.stderr and "rdkafka" not in run.stderr and run.stderr == ""
    kafka = next(l for l in run.stdout.splitlines() if l.split()[:2] == ["unknown", "kafka"])
    assert "unreachable" in kafka and "Connection refused" in kafka

    run = cli(down, "status", "--json")
    assert run.code == 3 and run.stderr == ""
    doc = run.json()
    assert doc["state"] == "unknown"
    assert {c["area"] for c in doc["checks"] if c["state"] == "unknown"} == {"kafka"}
    # what PostgreSQL can tell is still told
    assert any(c["area"] == "database" and c["state"] == "ok" for c in doc["checks"])

    lag = cli(down, "status", "lag")
    assert lag.code == 3
    assert "Kafka does not answer" in lag.stderr and "Traceback" not in lag.stderr and "%3|" not in lag.stderr


def test_postgres_down_answers_fast_with_unknown(settings: Settings, all_topics: list[str]) -> None:
    down = settings.replace(pg_dsn=f"postgresql://insights@127.0.0.1:{closed_port()}/insights")
    started = time.monotonic()
    assert gather(down).exit_code == 3
    assert time.monotonic() - started < down.status.timeout_s + 2
    run = cli(down, "status", "--json")
    assert run.code == 3, run.stdout + run.stderr
    doc = run.json()
    postgres = next(c for c in doc["checks"] if c["area"] == "postgres")
    assert postgres["state"] == "unknown" and "unreachable" in postgres["reason"]
    assert any(c["area"] == "kafka" and c["state"] == "ok" for c in doc["checks"])


def test_missing_slot_fails_and_an_idle_slot_holding_wal_is_flagged(
    slot_settings: Settings, pg: psycopg.Connection
) -> None:
    missing = gather(slot_settings.replace(cdc_slot_name="status_no_such_slot"))
    row = _row(missing, "cdc", "status_no_such_slot")
    assert row.state == "fail" and "insights cdc setup" in row.reason and row.metrics == {"exists": False}
    optional = gather(slot_settings.replace(cdc_slot_name="status_no_such_slot", status_slot_required=False))
    assert _row(optional, "cdc", "status_no_such_slot").state == "ok"

    # WAL written after the slot was made is WAL the idle slot holds
    pg.execute("CREATE TABLE wal_filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g")
    name = slot_settings.cdc.slot_name
    held = _row(gather(slot_settings), "cdc", name)
    assert held.metrics["active"] is False and held.metrics["retained_bytes"] > 1_000_000
    assert held.state == "ok"  # well under 256 MiB
    tight = gather(slot_settings.replace(status_slot_retained_warn="1MiB", status_slot_retained_fail="1GiB"))
    row = _row(tight, "cdc", name)
    assert row.state == "warn"  # (the test made no topics: the overall state is not the slot's)
    assert row.reason.startswith("idle (no reader), holding ") and "(threshold 1.0 MiB)" in row.reason
    assert "start insights cdc run, or insights cdc drop if nothing reads it" in row.reason
    assert isinstance(row.metrics["retained_bytes"], int)


def test_lag_view_shows_postgres_and_kafka_offsets_per_partition(
    slot_settings: Settings, all_topics: list[str]
) -> None:
    settings = slot_settings
    topic = _scrape_topic(settings)
    produce(settings, topic, "product_scraped", [scrape(n, 0) for n in range(18)])
    run_until_idle(settings, "scrape", idle=2)
    produce(settings, topic, "product_scraped", [scrape(n, 1) for n in range(18)])

    run = cli(settings, "status", "lag", "--json")
    assert run.code == 0, run.stderr
    rows = [r for r in run.json()["partitions"] if r["topic"] == topic]
    assert len(rows) == 6 and {r["group"] for r in rows} == {settings.consumer.group}
    for r in rows:
        assert r["pg_offset"] == r["kafka_offset"], r  # both written at the end of each batch
        assert r["lag"] == r["log_end"] - r["pg_offset"]
        assert r["member_id"] is None  # the consumer stopped
    assert sum(r["lag"] for r in rows) == 18

    # the piped table: kafka-consumer-groups style, one line per partition
    run = cli(settings, "status", "lag", COLUMNS="80")
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["GROUP", "TOPIC", "PARTITION", "PG-OFFSET", "KAFKA-OFFSET", "LOG-END", "LAG",
                                "CONSUMER-ID", "HOST"]
    mine = [l.split() for l in lines[1:] if topic in l]
    assert len(mine) == 6 and all(len(cells) == 9 and cells[0] == settings.consumer.group for cells in mine)

    # any Kafka group by name, e.g. the DLQ replayer: it stores nothing in PostgreSQL
    _poison(settings, topic, 1)
    run_until_idle(settings, "scrape", idle=2)
    replay_dlq(settings, topic)
    group = f"{settings.kafka.topic_prefix}.dlq-replayer"
    run = cli(settings, "status", "lag", "--group", group, "--json")
    rows = run.json()["partitions"]
    assert [(r["topic"], r["pg_offset"], r["kafka_offset"], r["lag"]) for r in rows] == [(dlq_name(topic), None, 1, 0)]


def test_piped_table_is_one_line_per_row_at_80_columns_and_agrees_with_json(
    slot_settings: Settings, all_topics: list[str]
) -> None:
    settings = slot_settings
    topic = _scrape_topic(settings)
    produce(settings, topic, "product_scraped", [scrape(n, 0) for n in range(3)])
    run_until_idle(settings, "scrape", idle=2)
    _poison(settings, topic, 1)  # a row with a long reason, after the consumer stopped

    env = {"COLUMNS": "80", "INSIGHTS_STATUS_LAG_RECORDS_WARN": "1"}
    table = cli(settings, "status", **env)
    doc = cli(settings, "status", "--json", **env).json()
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["STATE", "AREA", "NAME", "REASON"]
    body = [line.split(None, 3) for line in lines[1:-1]]
    from_json = [[c["state"], c["area"], c["name"], c["reason"]] for c in doc["checks"]]
    # same rows, same order; names and reasons whole although far wider than 80 columns
    assert [b[:3] for b in body] == [j[:3] for j in from_json]
    assert max(len(line) for line in lines) > 80
    for b, j in zip(body, from_json, strict=True):
        # two runs: WAL positions and ages move in between (one report rendered twice: test_render)
        if j[1] in ("database", "topics", "dlq"):
            assert b[3] == j[3]
    assert lines[-1] == f"{doc['state'].upper()} (exit {doc['exit_code']})" and table.code == doc["exit_code"] == 1
    assert all(isinstance(v, (int, float, str, bool)) or v is None for c in doc["checks"] for v in c["metrics"].values())


def test_offsets_of_a_topic_that_no_longer_exists_are_flagged_not_fatal(settings: Settings, pg: psycopg.Connection) -> None:
    gone = f"{settings.kafka.topic_prefix}.deleted_long_ago"
    pg.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES (%s, %s, 0, 7)",
        (settings.consumer.group, gone),
    )
    report = gather(settings)
    row = _row(report, "consumers", f"{settings.consumer.group}/{gone}")
    assert row.state == "warn" and "does not exist: stale offsets" in row.reason
    assert not [c for c in report.checks if c.state == "unknown"], _not_ok(report)
