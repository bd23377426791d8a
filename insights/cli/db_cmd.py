"""``insights db``: migrations, partitions, maintenance and statistics of the PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import typer
from rich.table import Table

from insights.cli.context import console, settings_of
from insights.db import maintenance, migrations, partitions, roles, stats
from insights.db.errors import DatabaseError
from streams.pg import connect

app = typer.Typer(help="Migrate, partition, maintain and inspect the PostgreSQL database.", no_args_is_help=True)
partitions_app = typer.Typer(
    help="Partitions by time: create ahead, split the DEFAULT partition, prune by retention.",
    no_args_is_help=True,
)
app.add_typer(partitions_app, name="partitions")


@contextmanager
def _connect(ctx: typer.Context) -> Iterator[psycopg.Connection]:
    try:
        conn = connect(settings_of(ctx).pg, "db")
    except psycopg.Error as exc:
        text = str(exc).strip()
        raise DatabaseError(f"cannot connect to PostgreSQL: {text.splitlines()[0] if text else exc}") from exc
    with conn:
        yield conn


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value in (datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)):
        return "infinity"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


@app.command()
def migrate(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, change nothing"),
) -> None:
    """Apply the pending ddl/ migrations in order, each in a transaction, then create partitions."""
    settings = settings_of(ctx)
    with console.status("migrating…"):
        names = migrations.migrate(settings.pg.conninfo(), dry_run=dry_run)
    verb = "would apply" if dry_run else "applied"
    if not names:
        console.print("up to date: nothing to apply")
    for name in names:
        console.print(f"{verb} {name}")


@partitions_app.command("ensure")
def partitions_ensure(
    ctx: typer.Context,
    months_ahead: int | None = typer.Option(None, min=0, help="monthly tables: months ahead (policy: 3)"),
    days_ahead: int | None = typer.Option(None, min=0, help="daily tables: days ahead (policy: 14)"),
) -> None:
    """Move rows out of the DEFAULT partitions into their own, and create partitions ahead."""
    with _connect(ctx) as conn, console.status("ensuring partitions…"):
        created = partitions.ensure(conn, months_ahead=months_ahead, days_ahead=days_ahead)
    for name in created:
        console.print(f"created {name}")
    console.print(f"{len(created)} partition(s) created")


@partitions_app.command("prune")
def partitions_prune(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be dropped, drop nothing"),
) -> None:
    """Detach and drop the partitions wholly older than their table's retention (by bounds)."""
    with _connect(ctx) as conn, console.status("pruning partitions…"):
        gone = partitions.prune(conn, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    for item in gone:
        console.print(f"{verb} {item.partition} [{_when(item.lower)} .. {_when(item.upper)})", highlight=False)
    console.print(f"{len(gone)} partition(s) {'would be dropped' if dry_run else 'dropped'}")


@partitions_app.command("status")
def partitions_status(ctx: typer.Context) -> None:
    """List the partitions of every managed table with bounds and rows; DEFAULT rows are counted."""
    with _connect(ctx) as conn:
        infos = partitions.status(conn)
    table = Table("table", "partition", "from (UTC)", "to (UTC)", "rows")
    for info in infos:
        rows = f"{info.rows_estimate} (exact)" if info.is_default else f"~{info.rows_estimate}"
        table.add_row(
            info.parent,
            info.partition + (" [default]" if info.is_default else ""),
            _when(info.lower),
            _when(info.upper),
            rows,
        )
    console.print(table)


@app.command()
def maintain(ctx: typer.Context) -> None:
    """Partitions, prune, refresh the summary view concurrently, vacuum, analyze: safe while consumers write."""
    settings = settings_of(ctx)
    with console.status("maintenance…") as status:
        results = maintenance.maintain(
            settings.pg.conninfo(), on_step=lambda name: status.update(f"maintenance: {name}…")
        )
    table = Table("step", "seconds", "result")
    for result in results:
        table.add_row(result.name, f"{result.seconds:.2f}", result.detail)
    console.print(table)


@app.command("stats")
def stats_cmd(ctx: typer.Context) -> None:
    """Connection usage, table sizes and index usage, as tables."""
    with _connect(ctx) as conn:
        reports = stats.reports(conn)
    for report in reports:
        table = Table(*report.columns, title=report.title)
        for row in report.rows:
            table.add_row(*("-" if value is None else str(value) for value in row))
        console.print(table)


@app.command()
def passwords(ctx: typer.Context) -> None:
    """Set the service roles' login passwords from INSIGHTS_PG_INGEST_PASSWORD / INSIGHTS_PG_CDC_PASSWORD."""
    settings = settings_of(ctx)
    wanted = {"insights_ingest": settings.pg.ingest_password, "insights_cdc": settings.pg.cdc_password}
    with _connect(ctx) as conn:
        done = roles.set_passwords(conn, wanted)
    if not done:
        console.print("no password in the settings: nothing changed")
    for role in done:
        console.print(f"password set for {role}")
