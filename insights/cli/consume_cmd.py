"""``insights consume <sink>``: run one consumer process of a sink (the names: ``consumers.registry``).

Start N processes with the same consumer group to share the topic's partitions; each
runs in the service frame (``streams.service``): Prometheus metrics and ``/healthz`` on
``--metrics-port`` / ``INSIGHTS_METRICS_PORT`` (a taken port moves to the next free one,
0 = off), JSON logs with ``INSIGHTS_LOG_JSON``. SIGTERM or Ctrl-C finishes the batch in
hand, commits it and leaves the group.
"""

from __future__ import annotations

import logging
from enum import Enum

import typer

from consumers import registry as sinks
from insights.cli.context import console, settings_of
from insights.cli.service_opts import metrics_port_option, service, stuck_after_option, unreachable_after_option
from streams.service.heap import tune_for_batches

log = logging.getLogger("insights.consumer")

#: the registered sinks, as the choices of the command's argument
SinkName = Enum("SinkName", {name: name for name in sinks.names()}, type=str)  # type: ignore[misc]

SINK_HELP = "; ".join(f"{spec.name}: {spec.help}" for spec in sinks.SINKS.values())


def consume(
    ctx: typer.Context,
    sink: SinkName = typer.Argument(..., help=SINK_HELP, show_default=False),  # type: ignore[valid-type]
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
        None, "--exit-when-idle",
        help="batch jobs: exit once this many seconds passed without a record or a rebalance AND none "
        "of the assigned partitions lags (stored offset at the high watermark); a process with no "
        "partition waits for one, and exits only when the group's stored offsets reach the high "
        "watermark of every partition of the topic",
    ),
) -> None:
    """Run one consumer process of a sink until SIGTERM."""
    settings = settings_of(ctx)
    name = sink.value
    frame = service(
        settings,
        f"consume-{name}",
        metrics_port=metrics_port,
        stuck_after=stuck_after,
        unreachable_after=unreachable_after,
    )
    # after the imports, before the first batch: ~17 % less CPU for decode + prepare (heap.py)
    tune_for_batches()
    with frame:
        # the loop runs on the frame's stop Event, registry and health: a signal stops it,
        # and /metrics and /healthz show what it records
        loop = sinks.build_loop(
            settings,
            name,
            group=group or f"{settings.consumer.group}.{name}",
            stop=frame.stop,
            registry=frame.registry,
            health=frame.health,
            auto_offset_reset=auto_offset_reset,
            idle_exit_after=exit_when_idle,
        )
        totals = loop.run()
    log.info("stopped cleanly", extra={"sink": name, **vars(totals)})
    # stdout, for a person or a script (the demo quotes it): the logs are on stderr
    # soft_wrap: one line whatever the width, for a script (and the demo) that quotes it
    console.print(f"{name}: stopped cleanly: {totals.summary()}", highlight=False, soft_wrap=True)
