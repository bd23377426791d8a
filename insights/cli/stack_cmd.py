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
    # soft_wrap: a DSN longer than the terminal stays one line that can be pasted into .env
    for name, value in client_env(stack).items():
        console.print(f"{name}={value}", highlight=False, soft_wrap=True)
    # the TLS listener's settings on one line, to be taken or left as a whole (a node
    # started before the listener existed has none until it restarts: then no line)
    tls_env = stack.kafka.ssl_client_env() if not stack.kafka.stale_nodes() else {}
    if tls_env:
        console.print(
            "over TLS: " + " ".join(f"{k}={v}" for k, v in tls_env.items()), highlight=False, soft_wrap=True
        )
    if with_pgbouncer:
        console.print(
            f"through PgBouncer: INSIGHTS_PG_DSN={stack.pgbouncer.dsn('insights')}", highlight=False, soft_wrap=True
        )


def client_env(stack: LocalStack, kafka_tls: bool = False, kafka_sasl: bool = False) -> dict[str, str]:
    """The settings a client of this stack needs (no secret: PostgreSQL's password, if any,
    stays in the passfile the DSN names; Kafka's SASL password is the operator's own)."""
    env = {"INSIGHTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap}
    if kafka_sasl:
        env.update(stack.kafka.sasl_client_env())
    elif kafka_tls:
        env.update(stack.kafka.ssl_client_env())
    # after `stack up --replicas`, writers list every node (libpq finds the primary) and
    # readers prefer a replica
    env["INSIGHTS_PG_DSN"] = stack.cluster.write_dsn()
    read_dsn = stack.cluster.read_dsn()
    if read_dsn:
        env["INSIGHTS_PG_READ_DSN"] = read_dsn
    return env


@app.command()
def env(
    ctx: typer.Context,
    kafka_tls: bool = typer.Option(
        False, "--kafka-tls", help="Kafka through the TLS listener (SSL, the stack CA) instead of PLAINTEXT"
    ),
    kafka_sasl: bool = typer.Option(
        False, "--kafka-sasl",
        help="Kafka through the SASL_SSL listener (SCRAM-SHA-512 over TLS) as INSIGHTS_KAFKA_SASL_USERNAME; "
        "the password is yours (INSIGHTS_KAFKA_SASL_PASSWORD) and never printed",
    ),
) -> None:
    """Print the INSIGHTS_* settings that point a client at this stack, as NAME=value lines for .env.

    Starts nothing; `insights stack up` first. With --kafka-tls, the TLS listener's bootstrap,
    INSIGHTS_KAFKA_SECURITY_PROTOCOL=SSL and the CA; with --kafka-sasl, SASL_SSL's
    (docs/security.md, "Kafka TLS").
    """
    from core.errors import ConfigError

    stack = LocalStack(settings_of(ctx))
    if (kafka_tls or kafka_sasl) and stack.kafka.ssl_bootstrap is None:
        raise ConfigError("this stack has no Kafka TLS listener (INSIGHTS_STACK_KAFKA_SSL_PORT=0): unset it and restart Kafka")
    if kafka_sasl and not stack.settings.kafka.sasl_username:
        typer.echo(
            "note: set INSIGHTS_KAFKA_SASL_USERNAME and INSIGHTS_KAFKA_SASL_PASSWORD, then `insights stack up` "
            "registers that user", err=True,
        )
    if (kafka_tls or kafka_sasl) and stack.kafka.stale_nodes():
        typer.echo(
            "note: Kafka runs with a configuration older than its TLS listener: "
            "`insights stack down` then `insights stack up` applies it", err=True,
        )
    for name, value in client_env(stack, kafka_tls, kafka_sasl).items():
        typer.echo(f"{name}={value}")


@app.command("rotate-kafka-cert")
def rotate_kafka_cert(ctx: typer.Context) -> None:
    """Re-issue the Kafka TLS listeners' certificates from the stack CA; running nodes load them
    without a restart (clients trust the same CA and change nothing)."""
    kafka = LocalStack(settings_of(ctx)).kafka
    with console.status("re-issuing the Kafka certificates…"):
        loaded = kafka.rotate_certificates()
    for node in kafka.nodes:
        if node.ssl_port is None:
            continue
        state = "serves the new certificate" if node.node_id in loaded else "not running: loads it at its next start"
        console.print(f"kafka node {node.node_id} ({node.ssl_address}): {state}", highlight=False)


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
