"""``/metrics`` and ``/healthz`` of one process, on a port that never makes it crash.

Several services run side by side on one host (two ``consume scrape``, a ``cdc run`` and
its hot standby...), all with the same default port. A taken port is therefore normal,
not an error: the server takes the next free one of :data:`PORT_ATTEMPTS` (then any
free port), warns once, and logs the port it serves on so a scraper can be pointed at
it. Only a port that cannot be bound at all leaves the process without an endpoint,
with a warning; the service itself runs on either way.

``/healthz`` answers the JSON of :meth:`Health.report`: 200 when healthy, 503 with the
reasons otherwise (a stuck loop, a dependency unreachable for too long, a fatal fault).
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.service.health import Health

log = logging.getLogger("insights.service")

#: the requested port and the ones after it, before any free port is taken
PORT_ATTEMPTS = 10
_TAKEN = {errno.EADDRINUSE, errno.EACCES}


def candidate_ports(port: int, attempts: int = PORT_ATTEMPTS) -> Iterator[int]:
    """``port``, the ``attempts - 1`` ports after it (within range), then 0 (any free port)."""
    if port == 0:  # asked for any free port (tests)
        yield 0
        return
    for candidate in range(port, min(port + attempts, 65536)):
        yield candidate
    yield 0


def bind_first_free(
    host: str, port: int, factory: Callable[[tuple[str, int]], ThreadingHTTPServer], attempts: int = PORT_ATTEMPTS
) -> ThreadingHTTPServer | None:
    """The server bound to the first free candidate port; None if not even an ephemeral port binds."""
    last: OSError | None = None
    for candidate in candidate_ports(port, attempts):
        try:
            return factory((host, candidate))
        except OSError as exc:
            if exc.errno not in _TAKEN:
                last = exc
                break  # a bad host or no network: the next port would fail the same way
            last = exc
    log.warning(
        "no metrics/health endpoint: cannot bind a port",
        extra={"requested_port": port, "host": host, "error": str(last)},
    )
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in progress must not hold up the process's exit

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver prints a raw traceback to stderr (a scraper that hung up, say):
        # a log record keeps stderr one format, and it is not worth more than debug
        log.debug("metrics request failed", exc_info=True, extra={"client": str(client_address)})


class MetricsServer:
    """Serves a registry and a :class:`Health` on a daemon thread (see the module doc)."""

    def __init__(
        self, registry: CollectorRegistry, health: Health, port: int, host: str = "0.0.0.0",
        attempts: int = PORT_ATTEMPTS,
    ) -> None:
        self.requested_port = port
        handler = _handler_for(registry, health)
        self._server = bind_first_free(host, port, lambda address: _Server(address, handler), attempts)
        self._thread: threading.Thread | None = None
        if self._server is not None and self.port != port:
            log.warning(
                "metrics port %d is taken (another process on this host?): serving on %d instead",
                port, self.port, extra={"requested_port": port, "port": self.port},
            )

    @property
    def port(self) -> int | None:
        """The port actually served, None without an endpoint."""
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        if self._server is not None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
            self._thread.start()
            log.info("metrics and health endpoint up", extra={"port": self.port, "paths": ["/metrics", "/healthz"]})
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        self._server = None


def _handler_for(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                report = health.report()
                body = json.dumps(report.as_dict()).encode() + b"\n"
                self._reply(200 if report.healthy else 503, body, "application/json")
            else:
                self._reply(404, b"not found: /metrics or /healthz\n", "text/plain")

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # scrapes are not log lines
            return

    return Handler
