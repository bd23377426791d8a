"""``insights stack up | down | status``: the local PostgreSQL and Kafka."""

from __future__ import annotations

import typer
from rich.table import Table

from insights.cli.context import console, settings_of
from insights.stack import LocalStack

app = typer.Typer(help="Start, stop and inspect the local PostgreSQL + Kafka stack.", no_args_is_help=True)


@app.command()
def up(
    ctx: typer.Context,
    with_pgbouncer: bool = typer.Option(
        False, "--with-pgbouncer", help="also start PgBouncer (transaction pooling) on INSIGHTS_STACK_PGBOUNCER_PORT"
    ),
    brokers: int = typer.Option(
        None,
        "--brokers",
        min=1,
        max=5,
        help="Kafka nodes, each broker and controller (3: a quorum that survives one node); "
        "default INSIGHTS_STACK_KAFKA_BROKERS, else as the stack was formatted, else 1",
    ),
) -> None:
    """Install what is missing, start PostgreSQL and Kafka, wait until both answer (idempotent)."""
    stack = LocalStack(settings_of(ctx), brokers)
    with console.status("starting the local stack (first run downloads Kafka and may take minutes)…"):
        result = stack.up(with_pgbouncer=with_pgbouncer)
    for name, what in result.items():
        console.print(f"{name}: {what}")
    console.print(f"INSIGHTS_KAFKA_BOOTSTRAP_SERVERS={stack.kafka.bootstrap}")
    console.print(f"INSIGHTS_PG_DSN={stack.postgres.dsn}")
    if with_pgbouncer:
        console.print(f"through PgBouncer: INSIGHTS_PG_DSN={stack.pgbouncer.dsn('insights')}")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop Kafka and PostgreSQL cleanly (data is kept under the stack directory)."""
    for name, what in LocalStack(settings_of(ctx)).down().items():
        console.print(f"{name}: {what}")


@app.command()
def status(ctx: typer.Context) -> None:
    """Say which local services run and whether they answer; exit 1 if any does not."""
    rows = LocalStack(settings_of(ctx)).status()
    table = Table("service", "pid", "answers", "address", "details")
    for row in rows:
        table.add_row(row.name, str(row.pid or "-"), "yes" if row.answers else "no", row.address, row.detail or "-")
    console.print(table)
    if not all(row.answers for row in rows):
        raise typer.Exit(1)
