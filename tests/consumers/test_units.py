"""Pure parts of the consumers: mapping, merging, error classes, backoff, DLQ headers, health."""

from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
from decimal import Decimal

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from consumers.alerts.mapping import alert_row
from consumers.alerts.mapping import merge as merge_alerts
from consumers.scrape.mapping import PRODUCT_COLUMNS, merge, prepare, scrape_rows
from streams.consumer.policy import Action, default_policy
from streams.dlq import H_ERROR_CLASS, H_OFFSET, DeadLetter, dlq_headers, headers_dict
from streams.faults import ErrorClass, is_permanent, is_transient
from streams.metrics import ConsumerMetrics
from streams.service.http import MetricsServer
from streams.service.health import Health
from streams.retry import Backoff, retry_transient
from tests.consumers.events import alert, asin, scrape, shuffled


def test_merge_keeps_the_newest_scrape_per_product_in_any_order() -> None:
    rows = [scrape_rows(scrape(n, s)) for n in range(5) for s in range(4)]
    for order in (rows, list(reversed(rows)), shuffled(rows, 3)):
        batch = merge(order + order)
        assert len(batch.products) == 5
        title = PRODUCT_COLUMNS.index("title")
        assert {p[title] for p in batch.products} == {f"Product {n} as of scrape 3" for n in range(5)}
        assert len(batch.snapshots) == 20
        assert len(batch.features) == 5 * 2
        assert all(f[3].endswith("at 3") for f in batch.features)


def test_scrape_rows_use_the_seed_spelling_and_json_documents() -> None:
    rows = scrape_rows(scrape(1, 1))
    assert rows.product[0] == asin(1)
    assert rows.product[PRODUCT_COLUMNS.index("dimensions")] == {"length": 10.5, "width": 2.0, "unit": "cm"}
    assert rows.snapshot[8] == "in_stock" and rows.features[0][6] == "parser"
    assert rows.snapshot[-1]["currency"] == "USD"


def test_an_invalid_record_raises_a_validation_error_classed_for_the_dlq() -> None:
    record = scrape(1, 1).to_avro()
    record["rating"] = Decimal("7.00")
    with pytest.raises(ValidationError) as caught:
        prepare(record)
    decision = default_policy(caught.value)
    assert decision.action is Action.DEAD_LETTER and decision.error_class is ErrorClass.VALIDATION


def test_alert_rows_and_duplicates() -> None:
    row = alert_row(alert(3, 1, 1, target=asin(1)))
    assert row[2] == "price_change" and row[4] == "high" and row[7] == {"price": 20.0}
    assert len(merge_alerts([row, row, alert_row(alert(3, 1, 2))])) == 2


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.SerializationFailure(), True),
        (psycopg.errors.DeadlockDetected(), True),
        (psycopg.errors.AdminShutdown(), True),
        (psycopg.errors.ForeignKeyViolation(), False),
        (psycopg.errors.CheckViolation(), False),
        (KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)), True),
        (ValueError("bad"), False),
    ],
)
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
    assert (default_policy(exc).action is Action.RETRY) is transient


@pytest.mark.parametrize(
    "exc",
    [
        # libpq's words while connecting (psycopg gives no SQLSTATE then)
        psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                                 'FATAL:  password authentication failed for user "insights"'),
        psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                                 'FATAL:  database "nope" does not exist'),
        psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                                 'FATAL:  role "nobody" does not exist'),
        psycopg.OperationalError('connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1"'),
        psycopg.errors.InsufficientPrivilege(),
        psycopg.errors.UndefinedTable(),
        KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)),
        KafkaException(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED)),
    ],
)
def test_permanent_faults_are_never_retried_nor_dead_lettered(exc: BaseException) -> None:
    assert is_permanent(exc) and not is_transient(exc)
    assert default_policy(exc).action is Action.RAISE
    try:  # wrapped, it is still permanent: the cause decides
        raise RuntimeError("partition helper failed") from exc
    except RuntimeError as outer:
        assert is_permanent(outer) and not is_transient(outer)


def test_a_server_going_away_is_not_permanent() -> None:
    for exc in (
        psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 1 failed: '
                                 "Connection refused"),
        psycopg.OperationalError("connection failed: FATAL:  the database system is starting up"),
        KafkaException(KafkaError(KafkaError._TRANSPORT)),
    ):
        assert is_transient(exc) and not is_permanent(exc)


def test_health_logs_an_outage_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    health = Health(unreachable_after=60)
    with caplog.at_level(logging.INFO, logger="insights.service"):
        for attempt in range(50):  # the probe, the loop and the writer's retries all report
            health.failing("postgres", f"refused (attempt {attempt})")
        health.ok("postgres")
        health.ok("postgres")
        health.failing("kafka", "down")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["postgres unreachable", "postgres reachable again", "kafka unreachable"]


def test_a_permanent_fault_found_by_a_probe_makes_health_fail_at_once() -> None:
    health = Health(unreachable_after=60)
    refused = psycopg.OperationalError("password authentication failed")
    health.found_permanent(refused, "postgres: password authentication failed")
    report = health.report()
    assert not report.healthy and report.reasons == ["fatal: postgres: password authentication failed"]
    assert health.permanent is refused


def test_a_wrapped_transient_error_is_still_transient() -> None:
    try:
        try:
            raise psycopg.OperationalError("connection lost")
        except psycopg.Error as inner:
            raise RuntimeError("partition helper failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_constraint_errors_are_dead_lettered_as_constraint() -> None:
    decision = default_policy(psycopg.errors.ForeignKeyViolation())
    assert decision.action is Action.DEAD_LETTER and decision.error_class is ErrorClass.CONSTRAINT
    assert default_policy(RuntimeError("bug")).action is Action.RAISE


def test_backoff_grows_to_its_cap() -> None:
    delays = Backoff(initial=0.1, factor=2, cap=1.0, jitter=False).delays()
    assert [round(next(delays), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = Backoff(initial=0.1, cap=1.0).delays(random.Random(1))
    assert all(0 < next(jittered) <= 1.0 for _ in range(20))


def test_retry_transient_retries_only_transient_errors() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.OperationalError("restarting")
        return "done"

    assert retry_transient(flaky, backoff=Backoff(initial=0.001, cap=0.002)) == "done"
    assert len(calls) == 3
    with pytest.raises(psycopg.errors.UniqueViolation):
        retry_transient(lambda: (_ for _ in ()).throw(psycopg.errors.UniqueViolation()), backoff=Backoff(0.001))


def test_dlq_headers_carry_the_origin_and_reason() -> None:
    letter = DeadLetter(ErrorClass.CORRUPT, "x" * 5000, "t.events", 3, 42, 1700000000000, b"k", b"v")
    headers = headers_dict(dlq_headers(letter, "group-a"))
    assert headers[H_ERROR_CLASS] == "corrupt_payload" and headers[H_OFFSET] == "42"
    assert headers["insights.original.partition"] == "3"
    assert headers["insights.original.timestamp"] == "1700000000000"
    assert headers["insights.consumer.group"] == "group-a"
    assert len(headers["insights.error.reason"]) == 2000


def test_health_endpoint_fails_when_the_loop_is_stuck() -> None:
    metrics = ConsumerMetrics("scrape", "g")
    health = Health(stuck_after=0.3)
    server = MetricsServer(metrics.registry, health, 0, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        health.beat()
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as reply:
            assert reply.status == 200
        time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as stuck:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
        assert stuck.value.code == 503
        assert b"stuck" in stuck.value.read()
        health.beat()
        metrics.rows.labels("products").inc(3)
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as reply:
            body = reply.read().decode()
        assert 'insights_consumer_rows_written_total{table="products"} 3.0' in body
        assert "insights_consumer_batch_seconds_bucket" in body
    finally:
        server.stop()


def test_batch_metrics_say_inserted_updated_and_already_stored() -> None:
    from streams.consumer.sink import Writes
    from streams.consumer.transaction import BatchResult

    metrics = ConsumerMetrics("scrape", "g")
    writes = Writes()
    writes.count("product_snapshots", 7, 0)
    writes.count("products", 2, 3)
    metrics.record_batch(writes, BatchResult(consumed=10, stored=7, already_stored=2, dead_letters=1,
                                             inserted=9, updated=3))
    body = metrics.exposition().decode()
    assert 'insights_consumer_row_changes_total{op="inserted",table="product_snapshots"} 7.0' in body
    assert 'insights_consumer_row_changes_total{op="updated",table="products"} 3.0' in body
    assert 'insights_consumer_rows_written_total{table="products"} 5.0' in body
    assert 'insights_consumer_events_total{outcome="already_stored"} 2.0' in body
    assert 'insights_consumer_events_total{outcome="dead_lettered"} 1.0' in body
