"""``insights consume scrape | alerts | summaries``: run one consumer process of a sink.

Start N processes with the same consumer group to share the topic's partitions; each
runs in the service frame (``streams.service``): Prometheus metrics and ``/healthz`` on
``--metrics-port`` / ``INSIGHTS_METRICS_PORT`` (a taken port moves to the next free one,
0 = off), JSON logs with ``INSIGHTS_LOG_JSON``. SIGTERM or Ctrl-C finishes the batch in
hand, commits it and leaves the group.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING, Any

import typer

from insights.cli.context import console, settings_of
from insights.cli.service_opts import metrics_port_option, service, stuck_after_option, unreachable_after_option
from core.settings import Settings

if TYPE_CHECKING:
    from streams.service.runner import Service

log = logging.getLogger("insights.consumer")


class Sink(str, Enum):
    scrape = "scrape"
    alerts = "alerts"
    summaries = "summaries"


SINK_HELP = (
    "scrape: ProductScraped events into products, product_snapshots and product_features; "
    "alerts: AlertTriggered events into alerts, keeping alert_rules' counters exact; "
    "summaries: the CDC topics of products, product_snapshots and alerts into summaries.product_summary"
)


def build_loop(settings: Settings, sink: Sink, **options: Any) -> Any:
    """The shared consumer loop around one sink (summaries subscribes to three CDC topics)."""
    from streams.consumer import ConsumerLoop  # lazy: CLI start-up of the other commands

    group = options.pop("group") or f"{settings.consumer.group}.{sink.value}"
    if sink is Sink.summaries:
        from consumers.summaries.consumer import SummariesLoop  # lazy: CLI start-up of the other commands

        return SummariesLoop(settings, group=group, **options)
    if sink is Sink.scrape:
        from consumers.scrape import ScrapeSink  # lazy: CLI start-up of the other commands

        return ConsumerLoop(settings, ScrapeSink(), group=group, **options)
    from consumers.alerts import AlertsSink  # lazy: CLI start-up of the other commands

    return ConsumerLoop(settings, AlertsSink(), group=group, **options)


def attach(loop: Any, frame: Service) -> None:
    """Run ``loop`` inside the service frame: its stop Event, registry and health.

    The loop still builds its own metrics object; it is replaced before ``run`` by one
    on the frame's registry and health, and the loop's stop Event is the frame's, so a
    signal stops it whichever handler catches it.
    """
    from streams.metrics import ConsumerMetrics  # lazy: CLI start-up of the other commands

    loop.stop = frame.stop
    loop.metrics = ConsumerMetrics(loop.sink.name, loop.group, registry=frame.registry, health=frame.health)


def consume(
    ctx: typer.Context,
    sink: Sink = typer.Argument(..., help=SINK_HELP, show_default=False),
    group: str | None = typer.Option(
        None, "--group", help="consumer group (default INSIGHTS_CONSUMER_GROUP + '.<sink>')"
    ),
    metrics_port: int | None = metrics_port_option(),
    auto_offset_reset: str = typer.Option(
        "earliest", "--auto-offset-reset", help="where a group with no stored offset starts"
    ),
    stuck_after: float = stuck_after_option(),
    unreachable_after: float = unreachable_after_option(),
    exit_when_idle: float | None = typer.Option(
        None, "--exit-when-idle", help="exit after this many seconds without records (batch jobs)"
    ),
) -> None:
    """Run one consumer process of a sink (scrape, alerts or summaries) until SIGTERM."""
    settings = settings_of(ctx)
    frame = service(
        settings,
        f"consume-{sink.value}",
        metrics_port=metrics_port,
        stuck_after=stuck_after,
        unreachable_after=unreachable_after,
    )
    with frame:
        loop = build_loop(
            settings,
            sink,
            group=group,
            metrics_port=0,  # the frame serves /metrics and /healthz
            auto_offset_reset=auto_offset_reset,
            stuck_after=stuck_after,
            idle_exit_after=exit_when_idle,
        )
        attach(loop, frame)
        totals = loop.run()
    log.info("stopped cleanly", extra={"sink": sink.value, **vars(totals)})
    # stdout, for a person or a script (the demo quotes it): the logs are on stderr
    console.print(
        f"{sink.value}: stopped cleanly: {totals.stored} stored, {totals.skipped} already stored, "
        f"{totals.dead_letters} dead-lettered",
        highlight=False,
    )
