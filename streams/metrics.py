"""Prometheus metrics and a health endpoint for one consumer process.

Each process owns a registry (not the global default) so that several loops in one
test process do not collide. ``/metrics`` serves the Prometheus text format and
``/healthz`` answers 200 while the loop makes progress and 503 once it has not
finished an iteration for ``stuck_after`` seconds (a hung poll, a database that
stays away, a deadlock in our own code: whatever the cause, the orchestrator should
know).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConsumerMetrics:
    def __init__(self, sink: str, group: str, stuck_after: float = 60.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"sink": sink, "group": group}
        self.stuck_after = stuck_after
        self._last_beat = time.monotonic()
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
        self._last_beat = time.monotonic()

    def seconds_since_beat(self) -> float:
        return time.monotonic() - self._last_beat

    def healthy(self) -> bool:
        return self.seconds_since_beat() < self.stuck_after

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on a daemon thread; port 0 picks a free port."""

    def __init__(self, metrics: ConsumerMetrics, port: int, host: str = "0.0.0.0") -> None:
        handler = _handler_for(metrics)
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


def _handler_for(metrics: ConsumerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                idle = metrics.seconds_since_beat()
                if metrics.healthy():
                    self._reply(200, f"ok: last iteration {idle:.1f}s ago\n".encode(), "text/plain")
                else:
                    body = f"stuck: no loop iteration for {idle:.1f}s (limit {metrics.stuck_after:.0f}s)\n"
                    self._reply(503, body.encode(), "text/plain")
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
