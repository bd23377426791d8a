"""The frame every long-running command runs in (``consume``, ``cdc run``, ``summaries sweep --every``).

::

    with Service("cdc-run", settings.service, metrics_port=port, probes=[...]) as service:
        reader = CdcReader(settings, registry=service.registry, health=service.health, stop=service.stop)
        reader.run()

On entry: logging (JSON lines when ``INSIGHTS_LOG_JSON`` is true, librdkafka's lines
included, see ``logs``), SIGTERM/SIGINT handlers that set :attr:`Service.stop`, a
per-process Prometheus registry with process metrics, ``/metrics`` and ``/healthz`` on
the configured port (a taken port moves to the next free one, see ``http``; ``0`` = no
endpoint), and reachability probes of the dependencies the command names. On exit,
all of it is taken down again; an exception leaving the block marks the process fatal
first, so a scrape during shutdown already sees it unhealthy.

The work inside the block owns its loop: it polls :attr:`stop`, calls
``health.beat()`` every iteration (unless the service was built with
``stuck_after=None``) and registers its metrics on :attr:`registry`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

from core.settings import ServiceSettings
from streams.faults import describe
from streams.service.health import DEFAULT_STUCK_AFTER_S, DEFAULT_UNREACHABLE_AFTER_S, Health
from streams.service.http import MetricsServer
from streams.service.logs import configure_logging
from streams.service.probes import Probe, Prober
from streams.service.registry import process_registry

log = logging.getLogger("insights.service")


def probe_interval(unreachable_after: float) -> float:
    """Often enough to see an outage within the threshold, never more than every half second."""
    return max(0.5, min(5.0, unreachable_after / 3))


class Service:
    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        metrics_port: int | None = None,
        stuck_after: float | None = DEFAULT_STUCK_AFTER_S,
        unreachable_after: float = DEFAULT_UNREACHABLE_AFTER_S,
        probes: Sequence[Probe] = (),
        host: str = "0.0.0.0",
    ) -> None:
        self.name = name
        self.settings = settings
        self.metrics_port = settings.metrics_port if metrics_port is None else metrics_port
        self.host = host
        self.stop = threading.Event()
        self.registry = process_registry()
        self.health = Health(stuck_after=stuck_after, unreachable_after=unreachable_after)
        self.server: MetricsServer | None = None
        self._prober = Prober(probes, self.health, probe_interval(unreachable_after))
        self._previous: dict[int, Any] = {}

    @property
    def port(self) -> int | None:
        """The port ``/metrics`` and ``/healthz`` are served on; None when off."""
        return self.server.port if self.server is not None else None

    # --- signals ---------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            # asked twice: the operator does not want to wait for the graceful stop
            log.warning("%s again: exiting without finishing the work in hand", name, extra={"signal": name})
            raise KeyboardInterrupt
        log.info("%s received: stopping", name, extra={"signal": name})
        self.stop.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may; a service run from a test thread is stopped by its Event
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    # --- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Service:
        configure_logging(self.settings.log_level, self.settings.log_json, fields={"service": self.name})
        self._install_signals()
        if self.metrics_port:
            self.server = MetricsServer(self.registry, self.health, self.metrics_port, self.host).start()
        else:
            log.info("metrics and health endpoint off (metrics port 0)")
        self._prober.start()
        log.info("service %s started", self.name, extra={"pid": os.getpid(), "port": self.port})
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            self.health.fatal(describe(exc)[:300])
        self._prober.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
        self._restore_signals()
        outcome = "stopped" if exc is None else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        # the error itself is reported once, by the entry point (one line, or a traceback for a bug)
        log.log(logging.INFO if exc is None else logging.WARNING, "service %s %s", self.name, outcome,
                extra={"outcome": outcome})
