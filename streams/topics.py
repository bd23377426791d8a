"""Topics as code: every topic the system uses, declared once, here.

A :class:`TopicSpec` says what a topic should look like (partitions, replication,
retention, cleanup policy) and which Avro subject its values follow. ``insights
topics create`` makes missing ones; it reports drift of live topics and changes
nothing silently.

The declarations, all in this module so that ``declared_topics`` cannot miss one:

* the event topics and their dead-letter queues (:func:`event_topics`);
* one CDC topic per streamed table (:func:`cdc_topics`);
* the dead-letter queues of the summaries sink, one per CDC topic it reads
  (:func:`summaries_dlq_topics`).

This module imports nothing of ``streams`` (only ``core``): the CDC reader, the
consumers and the topic admin all import it, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from core.settings import Settings

DAY_MS = 24 * 60 * 60 * 1000

#: tables the CDC reader streams by default (the ones summaries need)
CDC_TABLES: tuple[str, ...] = (
    "products",
    "product_snapshots",
    "alerts",
    "alert_rules",
    "competitive_groups",
    "competitive_group_members",
)

#: CDC topics: six partitions (the key spreads rows; per-row order holds because a key
#: always maps to one partition) and seven days of ``delete`` retention, long enough to
#: replay after a consumer's outage; a consumer that falls further behind rebuilds from
#: ``insights cdc snapshot``. Not compacted: a truncate event has no key and compaction
#: needs one.
CDC_PARTITIONS = 6
CDC_RETENTION_MS = 7 * DAY_MS

#: dead letters stay long enough for a human to look after a weekend
DLQ_RETENTION_MS = 30 * DAY_MS

#: the source tables a product summary is made of: the summaries sink reads their CDC topics
SUMMARIES_SOURCE_TABLES: tuple[str, ...] = ("products", "product_snapshots", "alerts")

#: the tables the alert-rule engine (consumers/rules) reads the CDC topics of: snapshots to
#: evaluate, rules and group membership to keep its cache current
RULES_SOURCE_TABLES: tuple[str, ...] = (
    "product_snapshots", "alert_rules", "competitive_groups", "competitive_group_members",
)


@dataclass(frozen=True)
class TopicSpec:
    #: logical name, stable across environments (``product_scraped``)
    key: str
    #: full topic name (prefix applied)
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    cleanup_policy: str = "delete"
    #: Avro subject of the value, a folder under schemas/avro/ (None: raw bytes)
    value_subject: str | None = None
    #: what the record key is, for documentation
    key_doc: str = ""
    doc: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        """Topic-level configuration as the broker spells it."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            **self.extra_config,
        }


def replicated(specs: list[TopicSpec], replication_factor: int, min_insync_replicas: int) -> list[TopicSpec]:
    """``specs`` with the cluster's replication: every topic of the system is as durable as the next.

    The factors come from settings and the brokers that answer
    (:meth:`core.settings.KafkaSettings.replication`); the topic admin applies them
    where declarations meet the cluster (``streams.admin``), so each declaration above
    needs no broker count. ``min.insync.replicas`` is a topic config, so a topic created
    on a smaller cluster shows up as drift.
    """
    return [
        replace(
            spec,
            replication_factor=replication_factor,
            extra_config={**spec.extra_config, "min.insync.replicas": str(min_insync_replicas)},
        )
        for spec in specs
    ]


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


def cdc_topic_name(settings: Settings, table: str, schema: str = "public") -> str:
    return f"{settings.kafka.topic_prefix}.cdc.{schema}.{table}"


def cdc_tables(settings: Settings) -> tuple[str, ...]:
    """The tables the CDC reader publishes: ``INSIGHTS_CDC_TABLES``, or :data:`CDC_TABLES`."""
    return tuple(settings.cdc.tables) or CDC_TABLES


def event_topics(settings: Settings, partitions: int = 6, replication_factor: int = 1) -> list[TopicSpec]:
    """The two event topics the scrapers and the alerting service write, and their DLQs."""
    scrape = TopicSpec(
        key="product_scraped",
        name=settings.kafka.topic("events.product_scraped"),
        partitions=partitions,
        replication_factor=replication_factor,
        retention_ms=7 * DAY_MS,
        value_subject="product_scraped",
        key_doc="ASIN (UTF-8): all scrapes of one product stay in order on one partition",
        doc="One event per scrape of one Amazon product page.",
    )
    alerts = TopicSpec(
        key="alert_triggered",
        name=settings.kafka.topic("events.alert_triggered"),
        partitions=partitions,
        replication_factor=replication_factor,
        retention_ms=7 * DAY_MS,
        value_subject="alert_triggered",
        key_doc="target ASIN (UTF-8), or the rule id when the alert has no product",
        doc="One event per alert raised by the alerting service.",
    )
    dlqs = [
        TopicSpec(
            key=f"{spec.key}.dlq",
            name=dlq_name(spec.name),
            partitions=1,
            replication_factor=replication_factor,
            retention_ms=DLQ_RETENTION_MS,
            key_doc="the original record's key",
            doc=f"Records of {spec.name} that could not be stored; headers say why.",
        )
        for spec in (scrape, alerts)
    ]
    return [scrape, alerts, *dlqs]


def cdc_topics(
    settings: Settings,
    tables: tuple[str, ...] | list[str],
    schema: str = "public",
    partitions: int = CDC_PARTITIONS,
    replication_factor: int = 1,
) -> list[TopicSpec]:
    """One topic per streamed table, ``<prefix>.cdc.<schema>.<table>``."""
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


def cdc_transactions_topic(settings: Settings, replication_factor: int = 1) -> TopicSpec:
    """``<prefix>.cdc.transactions``: BEGIN/END of each transaction with changes (``cdc_transaction_topic``)."""
    return TopicSpec(
        key="cdc.transactions",
        name=settings.kafka.topic("cdc.transactions"),
        partitions=1,  # one partition: the records of all transactions in commit order
        replication_factor=replication_factor,
        retention_ms=CDC_RETENTION_MS,
        key_doc='JSON {"xid": <transaction id>}',
        doc="Transaction metadata of the CDC reader: a JSON BEGIN and END per transaction, END with event counts "
        "per table (docs/cdc.md#transaction-metadata).",
    )


def summaries_source_topics(settings: Settings) -> list[str]:
    """The CDC topics the summaries sink subscribes to, in :data:`SUMMARIES_SOURCE_TABLES` order."""
    return [cdc_topic_name(settings, table, settings.cdc.schema_name) for table in SUMMARIES_SOURCE_TABLES]


def summaries_dlq_topics(settings: Settings, replication_factor: int = 1) -> list[TopicSpec]:
    """``<cdc topic>.dlq`` for each CDC topic the summaries sink reads."""
    return [
        TopicSpec(
            key=f"summaries.{table}.dlq",
            name=dlq_name(topic),
            partitions=1,
            replication_factor=replication_factor,
            retention_ms=DLQ_RETENTION_MS,
            key_doc="the original record's key",
            doc=f"CDC events of {topic} the summaries consumer could not use; headers say why.",
        )
        for table, topic in zip(SUMMARIES_SOURCE_TABLES, summaries_source_topics(settings), strict=True)
    ]


#: the tables the competitive positions (consumers/competitive) follow: current prices and
#: ranks from the snapshots, and the groups with their members
COMPETITIVE_SOURCE_TABLES: tuple[str, ...] = (
    "product_snapshots", "competitive_groups", "competitive_group_members",
)


def competitive_source_topics(settings: Settings) -> list[str]:
    """The CDC topics the competitive-positions sink subscribes to."""
    return [cdc_topic_name(settings, table, settings.cdc.schema_name) for table in COMPETITIVE_SOURCE_TABLES]


def rules_source_topics(settings: Settings) -> list[str]:
    """The CDC topics the alert-rule engine subscribes to, in :data:`RULES_SOURCE_TABLES` order."""
    return [cdc_topic_name(settings, table, settings.cdc.schema_name) for table in RULES_SOURCE_TABLES]


def rules_dlq_topics(settings: Settings, replication_factor: int = 1) -> list[TopicSpec]:
    """``<cdc topic>.dlq`` for each CDC topic the rule engine reads (one DLQ per CDC topic,
    shared with the summaries sink where both read it; the headers name the consumer)."""
    shared = {spec.name: spec for spec in summaries_dlq_topics(settings, replication_factor)}
    out: list[TopicSpec] = []
    for table, topic in zip(RULES_SOURCE_TABLES, rules_source_topics(settings), strict=True):
        name = dlq_name(topic)
        out.append(shared.get(name) or TopicSpec(
            key=f"rules.{table}.dlq",
            name=name,
            partitions=1,
            replication_factor=replication_factor,
            retention_ms=DLQ_RETENTION_MS,
            key_doc="the original record's key",
            doc=f"CDC events of {topic} the alert-rule engine could not use; headers say why.",
        ))
    return out


def declared_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the system declares: what ``insights topics`` manages and checks for drift."""
    return [
        *event_topics(settings),
        *cdc_topics(settings, cdc_tables(settings), settings.cdc.schema_name),
        *summaries_dlq_topics(settings),
        *([cdc_transactions_topic(settings)] if settings.cdc.transaction_topic else []),
        *(spec for spec in rules_dlq_topics(settings) if spec.key.startswith("rules.")),
    ]
