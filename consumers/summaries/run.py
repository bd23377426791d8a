"""Entry points of the CLI: run the consumer, sweep the windows, report status."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg
from rich.console import Console

from consumers.summaries.store import sweep
from core.settings import Settings


def sweep_once(settings: Settings, console: Console, chunk: int, tombstone_ttl: timedelta,
               retention_months: dict[str, int] | None = None) -> None:
    with psycopg.connect(settings.pg.conninfo(), autocommit=True, application_name="insights-summaries-sweep") as conn:
        with console.status("recomputing summaries whose 30-day window moved"):
            result = sweep(conn, chunk=chunk, tombstone_ttl=tombstone_ttl, retention_months=retention_months)
    console.print(
        f"sweep: {result.recomputed} summaries recomputed ({result.changed} changed), "
        f"{result.tombstones} tombstones purged, {result.retired} summaries lost rows to retention",
        highlight=False,
    )


def sweep_forever(settings: Settings, console: Console, every: float, chunk: int, tombstone_ttl: timedelta,
                  retention_months: dict[str, int] | None = None) -> None:
    while True:
        started = time.monotonic()
        sweep_once(settings, console, chunk, tombstone_ttl, retention_months)
        time.sleep(max(every - (time.monotonic() - started), 0.0))
