"""The options every long-running command shares, and the service frame built from them.

One spelling for ``consume``, ``cdc run`` and ``summaries sweep --every`` (and the
services later commands add): ``--metrics-port``, ``--stuck-after``, ``--unreachable-after``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from core.settings import Settings
from streams.service.health import DEFAULT_STUCK_AFTER_S, DEFAULT_UNREACHABLE_AFTER_S

if TYPE_CHECKING:
    from streams.service.runner import Service


def metrics_port_option() -> Any:
    return typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="/metrics and /healthz port (default INSIGHTS_METRICS_PORT; taken: the next free one; 0 = off)",
    )


def stuck_after_option(default: float = DEFAULT_STUCK_AFTER_S) -> Any:
    return typer.Option(default, "--stuck-after", min=0.5, help="seconds without a loop iteration before /healthz fails")


def unreachable_after_option(default: float = DEFAULT_UNREACHABLE_AFTER_S) -> Any:
    return typer.Option(
        default,
        "--unreachable-after",
        min=0.5,
        help="seconds Kafka or PostgreSQL may stay unreachable before /healthz fails",
    )


def service(
    settings: Settings,
    name: str,
    *,
    metrics_port: int | None,
    stuck_after: float | None,
    unreachable_after: float,
    kafka: bool = True,
    postgres: bool = True,
) -> Service:
    """The frame of service ``name``, probing the dependencies it uses."""
    from streams.service.probes import KafkaProbe, PostgresProbe, Probe  # lazy: CLI start-up of the other commands
    from streams.service.runner import Service  # lazy: CLI start-up of the other commands

    probes: list[Probe] = []
    if kafka:
        probes.append(KafkaProbe(settings.kafka))
    if postgres:
        probes.append(PostgresProbe(settings.pg, f"{name}-health"))
    return Service(
        name,
        settings.service,
        metrics_port=metrics_port,
        stuck_after=stuck_after,
        unreachable_after=unreachable_after,
        probes=probes,
    )
