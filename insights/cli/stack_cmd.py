"""``insights stack up | down | status | failover``: the local PostgreSQL (with replicas) and Kafka."""

from __future__ import annotations


import typer
from rich.table import Table

from insights.cli.context import console, err_console, settings_of
from insights.stack import LocalStack

app = typer.Typer(help="Start, stop and inspect the local PostgreSQL + Kafka stack.", no_args_is_help=True)


@app.command()
def up(
    ctx: typer.Context,
    with_pgbouncer: bool = typer.Option(
        False, "--with-pgbouncer", help="also start PgBouncer (transaction pooling) on INSIGHTS_STACK_PGBOUNCER_PORT"
    ),
    brokers: int | None = typer.Option(
        None,
        "--brokers",
        min=1,
        max=5,
        help="Kafka nodes, each broker and controller (3: a quorum that survives one node); "
        "default INSIGHTS_STACK_KAFKA_BROKERS, else as the stack was formatted, else 1",
    ),
    replicas: int | None = typer.Option(
        None, "--replicas", min=0, max=8,
        help="streaming replicas to have (pg_basebackup, one physical slot each, ports from "
        "INSIGHTS_STACK_PG_REPLICA_BASE_PORT); existing ones are always started",
    ),
) -> None:
    """Install what is missing, start PostgreSQL (and its replicas) and Kafka, wait until they answer (idempotent)."""
    stack = LocalStack(settings_of(ctx), brokers)
    with console.status("starting the local stack (first run downloads Kafka and may take minutes)…") as status:
        result = stack.up(
            with_pgbouncer=with_pgbouncer, replicas=replicas, progress=lambda m: status.update(f"{m}…")
        )
    for name, what in result.items():
        console.print(f"{name}: {what}", highlight=False)
    console.print(f"INSIGHTS_KAFKA_BOOTSTRAP_SERVERS={stack.kafka.bootstrap}", highlight=False, soft_wrap=True)
    # soft_wrap: a DSN longer than the terminal stays one line that can be pasted into .env
    # after `stack up --replicas`, writers list every node (libpq finds the primary) and
    # readers prefer a replica: paste these into .env
    console.print(f"INSIGHTS_PG_DSN={stack.cluster.write_dsn()}", highlight=False, soft_wrap=True)
    read_dsn = stack.cluster.read_dsn()
    if read_dsn:
        console.print(f"INSIGHTS_PG_READ_DSN={read_dsn}", highlight=False, soft_wrap=True)
    if with_pgbouncer:
        console.print(
            f"through PgBouncer: INSIGHTS_PG_DSN={stack.pgbouncer.dsn('insights')}", highlight=False, soft_wrap=True
        )


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


@app.command()
def failover(
    ctx: typer.Context,
    to: str | None = typer.Option(None, "--to", help="replica to promote (name or port); default: the most advanced"),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation (needed when not interactive)"),
) -> None:
    """Promote a replica to primary and retire the old primary (docs/runbooks.md#primary-lost)."""
    from insights.cli.confirm import confirm
    from insights.ops.failover import failover as run_failover
    from insights.ops.failover import plan

    settings = settings_of(ctx)
    chosen = plan(settings, to)
    err_console.print("stack failover will:")
    for line in chosen.describe():
        err_console.print(f"  - {line}", highlight=False)
    confirm("Fail over?", yes=yes, refused="no failover")
    with console.status("failing over…") as status:
        result = run_failover(settings, chosen, progress=lambda m: status.update(f"{m}…"))
    for step in result.steps:
        console.print(f"done: {step}", highlight=False)
    console.print(f"INSIGHTS_PG_DSN={result.write_dsn}", highlight=False, soft_wrap=True)
    if result.read_dsn:
        console.print(f"INSIGHTS_PG_READ_DSN={result.read_dsn}", highlight=False, soft_wrap=True)
    if result.cdc_slot_missing:
        err_console.print("next: insights cdc resync (the CDC reader stops until then)", highlight=False)
