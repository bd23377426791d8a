"""The summaries consumer process: one consumer group over three CDC topics.

The shared loop (``streams.consumer``) reads one subscription; a librdkafka subscription
that starts with ``^`` is a regular expression, so one anchored pattern naming exactly
the three topics gives one group, one batch across the topics, and one transaction for
the batch's rows and all its offsets. Records the sink cannot use go to
``<topic>.dlq``, declared here and created before the loop starts.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer

from consumers.summaries.sink import SummariesSink
from core.settings import Settings
from streams.consumer import ConsumerLoop
from streams.consumer.loop import ConsumerError
from streams.topics import DAY_MS, TopicSpec, cdc_topic_name, dlq_name

#: the source tables a summary is made of
SOURCE_TABLES = ("products", "product_snapshots", "alerts")


def source_topics(settings: Settings) -> list[str]:
    return [cdc_topic_name(settings, table, settings.cdc.schema_name) for table in SOURCE_TABLES]


def subscription(topics: list[str]) -> str:
    """An anchored librdkafka pattern matching exactly ``topics`` (names are [A-Za-z0-9._-])."""
    return "^(" + "|".join(t.replace(".", "\\.") for t in topics) + ")$"


def dlq_topics(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(
            key=f"summaries.{table}.dlq",
            name=dlq_name(topic),
            partitions=1,
            replication_factor=1,
            retention_ms=30 * DAY_MS,
            key_doc="the original record's key",
            doc=f"CDC events of {topic} the summaries consumer could not use; headers say why.",
        )
        for table, topic in zip(SOURCE_TABLES, source_topics(settings), strict=True)
    ]


def ensure_dlq_topics(settings: Settings) -> None:
    from streams.admin import ensure_topics

    ensure_topics(settings, dlq_topics(settings))


class SummariesLoop(ConsumerLoop):
    """The shared loop, subscribed to the three CDC topics at once."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        from streams.serde import RecordContext, make_deserializer

        self.topics = source_topics(settings)
        super().__init__(
            settings,
            SummariesSink(),
            topic=subscription(self.topics),
            decoder=make_deserializer(settings, SummariesSink.subject),
            context=RecordContext,
            **kwargs,
        )

    def _require_topic(self, consumer: Consumer) -> None:
        missing = []
        for topic in self.topics:
            found = consumer.list_topics(topic, timeout=15).topics.get(topic)
            if found is None or found.error is not None:
                missing.append(topic)
        if missing:
            raise ConsumerError(
                f"CDC topic(s) {', '.join(missing)} do not exist: run `insights cdc setup` first"
            )
        ensure_dlq_topics(self.settings)  # before any record could need one
