"""The consumer loop's Prometheus metrics.

They live on the registry of the process's service runner (``streams.service``), which
serves ``/metrics`` and ``/healthz``; a loop built without one (a loop in a test thread)
gets a registry of its own, so that several loops in one process do not collide.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConsumerMetrics:
    def __init__(self, sink: str, group: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        labels = {"sink": sink, "group": group}
        self.messages = Counter(
            "insights_consumer_messages", "Kafka records consumed", ["topic"], registry=self.registry
        )
        self.rows = Counter(
            "insights_consumer_rows_written", "rows written to PostgreSQL", ["table"], registry=self.registry
        )
        self.row_changes = Counter(
            "insights_consumer_row_changes",
            "rows PostgreSQL reported inserted or updated (op=written: the sink cannot tell which)",
            ["table", "op"],
            registry=self.registry,
        )
        self.events = Counter(
            "insights_consumer_events",
            "records by outcome: stored (changed rows), already_stored (changed nothing), dead_lettered",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "insights_consumer_batch_seconds",
            "time from a batch's arrival to its database commit",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.dlq = Counter(
            "insights_consumer_dead_letters",
            "records sent to a dead-letter topic",
            ["topic", "error_class"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "insights_consumer_lag",
            "records between the committed position and the partition's high watermark",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.rebalances = Counter(
            "insights_consumer_rebalances", "partition assignment changes", ["kind"], registry=self.registry
        )
        self.retries = Counter(
            "insights_consumer_transient_retries",
            "batches retried after a transient failure",
            ["cause"],
            registry=self.registry,
        )
        self.info = Gauge("insights_consumer_info", "static labels of this process", list(labels), registry=self.registry)
        self.info.labels(**labels).set(1)

    def record_batch(self, writes: Any, result: Any) -> None:
        """One committed batch (``streams.consumer``'s ``Writes`` and ``BatchResult``, not
        imported: the write path imports this module): rows per table and operation, events
        per outcome."""
        for op, per_table in (("inserted", writes.inserted), ("updated", writes.updated), ("written", writes.written)):
            for table, count in per_table.items():
                self.row_changes.labels(table, op).inc(count)
                self.rows.labels(table).inc(count)
        for outcome, count in (("stored", result.stored), ("already_stored", result.already_stored),
                               ("dead_lettered", result.dead_letters)):
            if count:
                self.events.labels(outcome).inc(count)

    def record_lag(self, consumer: Consumer, committed: list[TopicPartition]) -> None:
        """Lag of each partition just committed, from the high watermark the client has cached."""
        for tp in committed:
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                self.lag.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    def forget_lag(self, partitions: list[TopicPartition]) -> None:
        """Partitions this process no longer owns: their lag is someone else's to report."""
        for tp in partitions:
            try:
                self.lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
