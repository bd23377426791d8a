"""declared_topics: every topic the system uses, from the one module that declares them."""

from __future__ import annotations

from core.settings import load_settings
from streams.topics import (
    CDC_TABLES,
    RULES_SOURCE_TABLES,
    SUMMARIES_SOURCE_TABLES,
    cdc_topic_name,
    declared_topics,
    dlq_name,
    event_topics,
    summaries_source_topics,
)


def test_every_kind_of_topic_is_declared_once() -> None:
    settings = load_settings(topic_prefix="unit")
    declared = declared_topics(settings)
    names = [s.name for s in declared]
    assert len(names) == len(set(names)), "a topic is declared twice"
    assert len({s.key for s in declared}) == len(declared), "a logical key is used twice"

    events = {s.name for s in event_topics(settings)}
    cdc = {cdc_topic_name(settings, table) for table in CDC_TABLES}
    summaries_dlqs = {dlq_name(cdc_topic_name(settings, table)) for table in SUMMARIES_SOURCE_TABLES}
    rules_dlqs = {dlq_name(cdc_topic_name(settings, table)) for table in RULES_SOURCE_TABLES}
    assert set(names) == events | cdc | summaries_dlqs | rules_dlqs
    # the one CDC topic both read (product_snapshots) has one DLQ, declared once
    assert summaries_dlqs & rules_dlqs == {"unit.cdc.public.product_snapshots.dlq"}
    # the event DLQs are there too, and the summaries' are not confused with them
    assert {"unit.events.product_scraped.dlq", "unit.events.alert_triggered.dlq"} <= events
    assert summaries_dlqs == {
        "unit.cdc.public.products.dlq",
        "unit.cdc.public.product_snapshots.dlq",
        "unit.cdc.public.alerts.dlq",
    }


def test_the_summaries_read_streamed_cdc_topics_and_dead_letter_to_declared_dlqs() -> None:
    settings = load_settings(topic_prefix="unit")
    by_name = {s.name: s for s in declared_topics(settings)}
    for topic in summaries_source_topics(settings):
        assert by_name[topic].value_subject == "cdc_change"
        dlq = by_name[dlq_name(topic)]
        assert dlq.partitions == 1 and dlq.value_subject is None  # raw original bytes
        assert dlq.retention_ms > by_name[topic].retention_ms


def test_cdc_topics_follow_the_configured_tables_and_schema() -> None:
    settings = load_settings(topic_prefix="unit", cdc_tables=["products"], cdc_schema="shop")
    cdc = [s for s in declared_topics(settings) if s.value_subject == "cdc_change"]
    assert [s.name for s in cdc] == ["unit.cdc.shop.products"]
    # the summaries' DLQs name the topics the summaries sink subscribes to, in the same schema
    dlqs = [s.name for s in declared_topics(settings) if s.key.startswith("summaries.")]
    assert dlqs == [dlq_name(t) for t in summaries_source_topics(settings)]
    assert all(".cdc.shop." in name for name in dlqs)
