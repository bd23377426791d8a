"""``insights status``: migrations, topics and dead letters, consumer lag, CDC slot."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from insights.cli.context import console, settings_of


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """One look at the whole pipeline; exit 1 when something needs attention."""
    from insights.status import gather  # lazy: CLI start-up of the other commands

    rows = gather(settings_of(ctx))
    if as_json:
        console.print_json(json.dumps([row.__dict__ for row in rows]))
    else:
        table = Table("area", "what", "state", "detail")
        for row in rows:
            style = None if row.healthy else "bold red"
            table.add_row(row.area, row.what, row.state, row.detail, style=style)
        console.print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)
