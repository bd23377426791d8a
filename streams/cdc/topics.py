"""The CDC topics, declared as TopicSpecs like every other topic.

One topic per streamed table, ``<prefix>.cdc.<schema>.<table>``. Six partitions (the
key spreads rows; per-row order holds because a key always maps to one partition) and
seven days of retention with ``delete`` cleanup: long enough to replay after an outage
of a consumer, and a consumer that falls further behind rebuilds from ``insights cdc
snapshot``. Not compacted: a truncate event has no key and compaction needs one.
"""

from __future__ import annotations

from core.settings import Settings
from streams.topics import DAY_MS, TopicSpec, cdc_topic_name

CDC_PARTITIONS = 6
CDC_RETENTION_MS = 7 * DAY_MS


def cdc_topics(
    settings: Settings,
    tables: tuple[str, ...] | list[str],
    schema: str = "public",
    partitions: int = CDC_PARTITIONS,
    replication_factor: int = 1,
) -> list[TopicSpec]:
    return [
        TopicSpec(
            key=f"cdc.{schema}.{table}",
            name=cdc_topic_name(settings, table, schema),
            partitions=partitions,
            replication_factor=replication_factor,
            retention_ms=CDC_RETENTION_MS,
            value_subject="cdc_change",
            key_doc="JSON object of the row's primary key columns (UTF-8); none for truncate events",
            doc=f"Committed changes of {schema}.{table} from logical replication (at-least-once).",
        )
        for table in tables
    ]


def ensure_cdc_topics(settings: Settings, specs: list[TopicSpec]) -> None:
    """Create missing CDC topics through the shared topic admin (drift is reported there)."""
    from streams.admin import ensure_topics

    ensure_topics(settings, specs)
