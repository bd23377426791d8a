"""``insights consume <sink>``: run one consumer process of a sink (the names: ``consumers.registry``).

Start N processes with the same consumer group to share the topic's partitions; each
serves Prometheus metrics and ``/healthz`` on ``INSIGHTS_METRICS_PORT`` (0 = off).
SIGTERM or Ctrl-C finishes the batch in hand, commits it and leaves the group.
"""

from __future__ import annotations

import logging
import signal
import threading
from enum import Enum

import typer
from prometheus_client import CollectorRegistry

from consumers import registry as sinks
from insights.cli.context import console, settings_of
from streams.consumer.logs import configure_logging
from streams.metrics import MetricsServer
from streams.service.health import Health

#: the registered sinks, as the choices of the command's argument
SinkName = Enum("SinkName", {name: name for name in sinks.names()}, type=str)  # type: ignore[misc]

SINK_HELP = "; ".join(f"{spec.name}: {spec.help}" for spec in sinks.SINKS.values())


def _stop_on_signals(stop: threading.Event) -> None:
    # Until the service runner owns this: SIGTERM/SIGINT only ask the loop to stop, so
    # the batch in hand is committed and the group left before the process exits.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())


def consume(
    ctx: typer.Context,
    sink: SinkName = typer.Argument(..., help=SINK_HELP, show_default=False),  # type: ignore[valid-type]
    group: str | None = typer.Option(
        None, "--group", help="consumer group (default INSIGHTS_CONSUMER_GROUP + '.<sink>')"
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus/health port (default INSIGHTS_METRICS_PORT; 0 = off)"
    ),
    auto_offset_reset: str = typer.Option(
        "earliest", "--auto-offset-reset", help="where a group with no stored offset starts"
    ),
    stuck_after: float = typer.Option(
        60.0, "--stuck-after", help="seconds without a loop iteration before /healthz fails"
    ),
    exit_when_idle: float | None = typer.Option(
        None, "--exit-when-idle", help="exit after this many seconds without records (batch jobs)"
    ),
) -> None:
    """Run one consumer process of a sink until SIGTERM."""
    settings = settings_of(ctx)
    configure_logging(settings.service.log_level, settings.service.log_json)
    name = sink.value
    stop, registry, health = threading.Event(), CollectorRegistry(auto_describe=True), Health(stuck_after=stuck_after)
    loop = sinks.build_loop(
        settings,
        name,
        group=group or f"{settings.consumer.group}.{name}",
        stop=stop,
        registry=registry,
        health=health,
        auto_offset_reset=auto_offset_reset,
        idle_exit_after=exit_when_idle,
    )
    _stop_on_signals(stop)
    port = settings.service.metrics_port if metrics_port is None else metrics_port
    server = MetricsServer(registry, health, port).start() if port else None
    if server is not None:
        logging.getLogger("insights.consumer").info("metrics endpoint up", extra={"port": server.port})
    try:
        totals = loop.run()
    finally:
        if server is not None:
            server.stop()
    console.print(
        f"{name}: stopped cleanly: {totals.stored} stored, {totals.skipped} already stored, "
        f"{totals.dead_letters} dead-lettered",
        highlight=False,
    )
