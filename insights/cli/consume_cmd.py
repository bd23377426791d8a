"""``insights consume scrape | alerts | summaries``: run one consumer process of a sink.

Start N processes with the same consumer group to share the topic's partitions; each
serves Prometheus metrics and ``/healthz`` on ``INSIGHTS_METRICS_PORT`` (0 = off).
SIGTERM or Ctrl-C finishes the batch in hand, commits it and leaves the group.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from insights.cli.context import console, settings_of
from core.settings import Settings


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


def consume(
    ctx: typer.Context,
    sink: Sink = typer.Argument(..., help=SINK_HELP, show_default=False),
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
    """Run one consumer process of a sink (scrape, alerts or summaries) until SIGTERM."""
    from streams.consumer.logs import configure_logging  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    configure_logging(settings.service.log_level, settings.service.log_json)
    loop = build_loop(
        settings,
        sink,
        group=group,
        metrics_port=metrics_port,
        auto_offset_reset=auto_offset_reset,
        stuck_after=stuck_after,
        idle_exit_after=exit_when_idle,
    )
    totals = loop.run()
    console.print(
        f"{sink.value}: stopped cleanly: {totals.stored} stored, {totals.skipped} already stored, "
        f"{totals.dead_letters} dead-lettered",
        highlight=False,
    )
