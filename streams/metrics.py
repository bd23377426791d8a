"""Prometheus metrics of a consumer, and a small ``/metrics`` + ``/healthz`` server.

The registry comes from whoever runs the process (one per process, not the global
default, so that several loops in one test process do not collide); a loop built
without one gets its own. ``/metrics`` serves the Prometheus text format and
``/healthz`` answers from :class:`streams.service.Health`: 200 while the loop makes
progress and its dependencies answer, 503 with the reasons otherwise (a hung poll, a
database that stays away, a deadlock in our own code: whatever the cause, the
orchestrator should know).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.service.health import Health

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


class MetricsServer:
    """``/metrics`` and ``/healthz`` on a daemon thread; port 0 picks a free port."""

    def __init__(self, registry: CollectorRegistry, health: Health, port: int, host: str = "0.0.0.0") -> None:
        handler = _handler_for(registry, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                report = health.report()
                if report.healthy:
                    self._reply(200, b"ok\n", "text/plain")
                else:
                    self._reply(503, ("\n".join(report.reasons) + "\n").encode(), "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # scrapes are not log lines
            return

    return Handler
