"""`insights cdc`: stream committed changes of the published tables to Kafka."""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Any

import typer
from rich.table import Table

from insights.cli.context import console, err_console, settings_of
from core.settings import Settings
from streams.cdc import slot as slots
from streams.cdc.errors import CdcError
from streams.cdc.lsn import format_lsn
from streams.topics import cdc_tables

app = typer.Typer(help="CDC reader: logical replication (pgoutput) -> Avro change events on Kafka.", no_args_is_help=True)


def _tables(settings: Settings, tables: list[str] | None) -> Settings:
    if tables:
        return settings.replace(cdc_tables=list(tables))
    return settings


@app.command()
def setup(
    ctx: typer.Context,
    table: list[str] = typer.Option(None, "--table", "-t", help="table to publish (repeatable); default: cdc_tables"),
) -> None:
    """Create the publication (publish_via_partition_root) and the pgoutput slot if missing, and the topics."""
    from streams.cdc.reader import CdcReader  # lazy: CLI start-up of the other commands

    settings = _tables(settings_of(ctx), table)
    CdcReader(settings).setup()
    console.print(
        f"publication {settings.cdc.publication} and slot {settings.cdc.slot_name} ready for "
        f"{', '.join(cdc_tables(settings))}"
    )


@app.command()
def drop(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
) -> None:
    """Drop the slot and the publication (WAL they pinned is released; positions are forgotten)."""
    settings = settings_of(ctx)
    if not yes:
        typer.confirm(
            f"Drop slot {settings.cdc.slot_name!r} and publication {settings.cdc.publication!r}? "
            "The reader's position is lost; a new slot needs `insights cdc snapshot` to rebuild consumers",
            abort=True,
        )
    with slots.connect(settings) as conn:
        done = slots.drop(conn, settings.cdc.slot_name, settings.cdc.publication)
    console.print("dropped " + ", ".join(done) if done else "nothing to drop")


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Show the slot: confirmed_flush_lsn, restart_lsn, lag in bytes and seconds, wal_status, safe_wal_size."""
    settings = settings_of(ctx)
    with slots.connect(settings) as conn:
        found = slots.slot_status(conn, settings.cdc.slot_name)
    if found is None:
        raise CdcError(f"no replication slot {settings.cdc.slot_name!r} (run `insights cdc setup`)")
    if as_json:
        console.print_json(json.dumps(found.as_dict()))
    else:
        table = Table(title=f"slot {found.slot}")
        table.add_column("field")
        table.add_column("value")
        for name, value in found.as_dict().items():
            table.add_row(name, "" if value is None else str(value))
        console.print(table)
    if found.wal_status == "lost":
        raise CdcError(f"slot {found.slot!r} is lost: see docs/cdc.md#lost-slot-recovery")


@app.command()
def run(
    ctx: typer.Context,
    table: list[str] = typer.Option(None, "--table", "-t", help="table to publish (repeatable); default: cdc_tables"),
) -> None:
    """Stream changes until SIGTERM/SIGINT; a second process waits as hot standby for the slot."""
    from prometheus_client import start_http_server  # lazy: CLI start-up of the other commands

    from streams.cdc.reader import CdcReader  # lazy: CLI start-up of the other commands

    settings = _tables(settings_of(ctx), table)
    logging.basicConfig(level=settings.service.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.service.metrics_port:
        start_http_server(settings.service.metrics_port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    reader = CdcReader(settings)
    err_console.print(f"cdc: streaming slot {settings.cdc.slot_name} (publication {settings.cdc.publication})")
    confirmed = reader.run(stop, standby_notice=lambda why: err_console.print(f"cdc: hot standby, slot busy: {why}"))
    err_console.print(f"cdc: stopped; confirmed {format_lsn(confirmed)}")


@app.command()
def snapshot(
    ctx: typer.Context,
    table: list[str] = typer.Option(None, "--table", "-t", help="table to snapshot (repeatable); default: cdc_tables"),
    recreate_slot: bool = typer.Option(
        False, "--recreate-slot", help="drop an existing slot first (the reader must be stopped)"
    ),
) -> None:
    """Emit the current rows as read events (op r) from the snapshot the slot's creation exports."""
    from streams.cdc.snapshot import run_snapshot  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    tables = tuple(table) if table else cdc_tables(settings)
    result = run_snapshot(settings, tables, recreate_slot=recreate_slot, console=err_console)
    console.print(
        f"snapshot at {result.consistent_point}: "
        + ", ".join(f"{t} {n} rows" for t, n in result.rows.items())
    )
