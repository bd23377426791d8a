"""The consumer loop's Prometheus metrics and liveness.

They live on the registry and :class:`Health` of the process's service runner
(``streams.service``), which serves ``/metrics`` and ``/healthz``; without one (a loop
in a test thread) the metrics get a registry and a health of their own, so that
several loops in one process do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.service.health import Health
from streams.service.http import MetricsServer as ServiceMetricsServer

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConsumerMetrics:
    def __init__(
        self,
        sink: str,
        group: str,
        stuck_after: float = 60.0,
        *,
        registry: CollectorRegistry | None = None,
        health: Health | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.health = health if health is not None else Health(stuck_after=stuck_after)
        labels = {"sink": sink, "group": group}
        self.messages = Counter(
            "insights_consumer_messages", "Kafka records consumed", ["topic"], registry=self.registry
        )
        self.rows = Counter(
            "insights_consumer_rows_written", "rows written to PostgreSQL", ["table"], registry=self.registry
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

    # --- liveness ------------------------------------------------------------------
    def beat(self) -> None:
        """The loop finished an iteration (a batch, or an empty poll)."""
        self.health.beat()

    def seconds_since_beat(self) -> float:
        return self.health.seconds_since_beat()

    def healthy(self) -> bool:
        return self.health.report().healthy

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def MetricsServer(metrics: ConsumerMetrics, port: int, host: str = "0.0.0.0") -> ServiceMetricsServer:  # noqa: N802
    """The consumer's registry and health served by the service runner's server.

    Kept for callers that start their own endpoint; a process run by
    :class:`streams.service.Service` has one already and passes its registry and
    health to :class:`ConsumerMetrics` instead.
    """
    return ServiceMetricsServer(metrics.registry, metrics.health, port, host)
