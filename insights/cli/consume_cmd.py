"""``insights consume scrape | alerts``: run one consumer process of a sink.

Start N processes with the same consumer group to share the topic's partitions; each
serves Prometheus metrics and ``/healthz`` on ``INSIGHTS_METRICS_PORT`` (0 = off).
SIGTERM or Ctrl-C finishes the batch in hand, commits it and leaves the group.
"""

from __future__ import annotations

import typer

from insights.cli.context import console, settings_of
from insights.settings import Settings

app = typer.Typer(help="Run the idempotent consumers (Kafka -> PostgreSQL).", no_args_is_help=True)

_GROUP = typer.Option(None, "--group", help="consumer group (default INSIGHTS_CONSUMER_GROUP + '.<sink>')")
_PORT = typer.Option(None, "--metrics-port", help="Prometheus/health port (default INSIGHTS_METRICS_PORT; 0 = off)")
_RESET = typer.Option("earliest", "--auto-offset-reset", help="where a group with no stored offset starts")
_STUCK = typer.Option(60.0, "--stuck-after", help="seconds without a loop iteration before /healthz fails")
_IDLE = typer.Option(None, "--exit-when-idle", help="exit after this many seconds without records (batch jobs)")


def _run(settings: Settings, sink_name: str, group: str | None, port: int | None, reset: str, stuck: float,
         idle: float | None) -> None:
    from streams.consumer import ConsumerLoop
    from streams.consumer.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    if sink_name == "scrape":
        from consumers.scrape import ScrapeSink

        sink = ScrapeSink()
    else:
        from consumers.alerts import AlertsSink

        sink = AlertsSink()  # type: ignore[assignment]
    loop = ConsumerLoop(
        settings,
        sink,
        group=group or f"{settings.consumer_group}.{sink_name}",
        metrics_port=port,
        auto_offset_reset=reset,
        stuck_after=stuck,
        idle_exit_after=idle,
    )
    totals = loop.run()
    console.print(
        f"{sink_name}: stopped cleanly: {totals.stored} stored, {totals.skipped} already stored, "
        f"{totals.dead_letters} dead-lettered",
        highlight=False,
    )


@app.command()
def scrape(
    ctx: typer.Context,
    group: str | None = _GROUP,
    metrics_port: int | None = _PORT,
    auto_offset_reset: str = _RESET,
    stuck_after: float = _STUCK,
    exit_when_idle: float | None = _IDLE,
) -> None:
    """Consume ProductScraped events into products, product_snapshots and product_features."""
    _run(settings_of(ctx), "scrape", group, metrics_port, auto_offset_reset, stuck_after, exit_when_idle)


@app.command()
def alerts(
    ctx: typer.Context,
    group: str | None = _GROUP,
    metrics_port: int | None = _PORT,
    auto_offset_reset: str = _RESET,
    stuck_after: float = _STUCK,
    exit_when_idle: float | None = _IDLE,
) -> None:
    """Consume AlertTriggered events into alerts, keeping alert_rules' counters exact."""
    _run(settings_of(ctx), "alerts", group, metrics_port, auto_offset_reset, stuck_after, exit_when_idle)


@app.command()
def summaries(
    ctx: typer.Context,
    group: str | None = _GROUP,
    metrics_port: int | None = _PORT,
    auto_offset_reset: str = _RESET,
    stuck_after: float = _STUCK,
    exit_when_idle: float | None = _IDLE,
) -> None:
    """Consume the CDC topics of products, product_snapshots and alerts into summaries.product_summary."""
    from consumers.summaries.run import run_summaries

    run_summaries(settings_of(ctx), group, metrics_port, auto_offset_reset, stuck_after, exit_when_idle)
