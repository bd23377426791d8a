"""Done-when #4: good and poison events mixed: good rows stored, each poison dead-lettered with its reason."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from core.settings import Settings
from streams.serde import RecordContext, make_serializer
from streams.dlq import H_ERROR_CLASS, H_GROUP, H_OFFSET, H_PARTITION, H_REASON, H_TOPIC
from tests.consumers.conftest import Topics, count, dlq_entries, produce, run_until_idle
from tests.consumers.events import alert, asin, scrape

pytestmark = pytest.mark.integration


def test_poison_scrapes_go_to_the_dlq_with_reasons_and_good_ones_are_stored(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    good = [scrape(n, seq) for n in range(20) for seq in range(3)]
    serialize = make_serializer(settings, "product_scraped")
    bad_rating = scrape(100, 0).to_avro()
    bad_rating["rating"] = Decimal("7.00")  # encodes as Avro decimal(3,2), breaks the model's 0-5 rule
    poison = [
        (b"B000000101", b"{\"json\": \"not avro\"}"),  # corrupt: wrong magic
        (b"B000000102", b"\xc3\x01" + bytes(range(8)) + b"\x02\x04"),  # unknown fingerprint
        (b"B000000103", serialize(scrape(103, 0), RecordContext(topics.scrape))[:40]),  # truncated payload
        bad_rating,
    ]
    stream: list[object] = []
    for i, event in enumerate(good):  # poison spread through the stream, in the same batches
        stream.append(event)
        if i % 15 == 7 and poison:
            stream.append(poison.pop(0))
    stream.extend(poison)
    produce(settings, topics.scrape, "product_scraped", stream, key=lambda e: b"B000000100")
    loop = run_until_idle(settings, "scrape")

    assert count(pg, "SELECT count(*) FROM product_snapshots") == len(good)
    assert count(pg, "SELECT count(*) FROM products") == 20
    assert count(pg, "SELECT count(*) FROM products WHERE asin = %s", asin(100)) == 0
    letters = dlq_entries(settings, topics.scrape, expect=4)
    assert len(letters) == 4, letters
    classes = sorted(entry[H_ERROR_CLASS] for entry in letters)
    assert classes == ["corrupt_payload", "corrupt_payload", "unknown_schema", "validation"]
    for entry in letters:
        assert entry[H_TOPIC] == topics.scrape
        assert entry[H_GROUP] == settings.consumer.group
        assert entry[H_PARTITION].isdigit() and entry[H_OFFSET].isdigit()
        assert entry[H_REASON]
    rating = next(e for e in letters if e[H_ERROR_CLASS] == "validation")
    assert "rating" in rating[H_REASON]
    assert loop.totals.dead_letters == 4
    assert loop.totals.stored == len(good)
    exposition = loop.metrics.exposition().decode()
    assert 'insights_consumer_dead_letters_total{error_class="corrupt_payload"' in exposition


def test_alert_for_an_unknown_rule_is_isolated_by_bisection(
    settings: Settings, topics: Topics, pg: psycopg.Connection, seed_rule
) -> None:
    seed_rule(1)
    produce(settings, topics.scrape, "product_scraped", [scrape(n, 0) for n in range(4)])
    run_until_idle(settings, "scrape", idle=2)
    good = [alert(1, n, seq, target=asin(n)) for n in range(4) for seq in range(10)]
    unknown_rule = [alert(999, 50, 1, target=asin(1)), alert(998, 51, 2, target=asin(2))]
    unknown_product = [alert(1, 52, 3, target="ZZZZZZZZZZ")]
    stream = good[:13] + unknown_rule[:1] + good[13:30] + unknown_product + good[30:] + unknown_rule[1:]
    produce(settings, topics.alerts, "alert_triggered", stream)
    loop = run_until_idle(settings, "alerts")

    assert count(pg, "SELECT count(*) FROM alerts") == len(good)
    assert count(pg, "SELECT trigger_count FROM alert_rules WHERE id = 1") == len(good)
    letters = dlq_entries(settings, topics.alerts, expect=3)
    assert len(letters) == 3
    assert {e[H_ERROR_CLASS] for e in letters} == {"constraint"}
    reasons = " ".join(e[H_REASON] for e in letters)
    assert "fk_alerts_rule" in reasons and "fk_alerts_target_asin" in reasons
    assert loop.totals.dead_letters == 3


def test_oversized_records_go_to_the_dlq_with_their_reason_and_never_reach_postgresql(
    settings: Settings, topics: Topics, pg: psycopg.Connection
) -> None:
    """Issue 15: a huge text or array is refused by the limits (INSIGHTS_MAX_*), before PostgreSQL."""
    long_text = scrape(300, 0).to_avro()
    long_text["product_description"] = "d" * (settings.consumer.max_text_chars + 1)  # < the broker's 1 MB
    many_items = scrape(301, 0).to_avro()
    many_items["bullet_points"] = ["b"] * 10_000
    good = [scrape(n, 0) for n in range(5)]
    produce(settings, topics.scrape, "product_scraped", [good[0], long_text, good[1], many_items, *good[2:]])
    loop = run_until_idle(settings, "scrape")

    assert count(pg, "SELECT count(*) FROM product_snapshots") == len(good)
    assert count(pg, "SELECT count(*) FROM products WHERE asin IN (%s, %s)", asin(300), asin(301)) == 0
    letters = dlq_entries(settings, topics.scrape, expect=2)
    assert len(letters) == 2, letters
    assert {e[H_ERROR_CLASS] for e in letters} == {"validation"}
    reasons = sorted(e[H_REASON] for e in letters)
    assert reasons[0].startswith("RecordTooLargeError: bullet_points has 10000 items"), reasons
    assert "INSIGHTS_MAX_LIST_ITEMS" in reasons[0]
    assert reasons[1].startswith("RecordTooLargeError: product_description is 100001 characters long"), reasons
    assert "INSIGHTS_MAX_TEXT_CHARS" in reasons[1]
    assert loop.totals.dead_letters == 2 and loop.totals.stored == len(good)
