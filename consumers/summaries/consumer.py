"""The summaries consumer: one consumer group over three CDC topics, declared as :data:`SPEC`.

The shared loop subscribes to the three topics at once: one group, one batch across the
topics, and one transaction for the batch's rows and all its offsets. Records the sink
cannot use go to ``<topic>.dlq``, declared here and created before the first record
(``insights cdc setup`` makes the CDC topics, not these).
"""

from __future__ import annotations

from consumers.spec import SinkSpec
from consumers.summaries.sink import SummariesSink
from core.settings import Settings
from streams.admin import ensure_topics
from streams.topics import DAY_MS, TopicSpec, cdc_topic_name, dlq_name

#: the source tables a summary is made of
SOURCE_TABLES = ("products", "product_snapshots", "alerts")


def source_topics(settings: Settings) -> list[str]:
    return [cdc_topic_name(settings, table, settings.cdc.schema_name) for table in SOURCE_TABLES]


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
    ensure_topics(settings, dlq_topics(settings))


SPEC = SinkSpec(
    name="summaries",
    help="the CDC topics of products, product_snapshots and alerts into summaries.product_summary",
    make=SummariesSink,
    topics=source_topics,
    missing_hint="run `insights cdc setup` first",
    own_dlq_topics=dlq_topics,
)
