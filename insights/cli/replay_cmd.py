"""``insights replay dlq | reset``: operators' tools to re-drive records (sinks are idempotent)."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.table import Table

from insights.cli.context import console, settings_of
from core.errors import ConfigError
from streams.replay import replay_dlq, reset_group

app = typer.Typer(help="Re-publish dead letters, or rewind a consumer group (Kafka and PostgreSQL offsets).", no_args_is_help=True)


@app.command()
def dlq(
    ctx: typer.Context,
    topic: str = typer.Option(..., "--topic", "-t", help="the event topic whose <topic>.dlq to replay"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="replay at most this many records"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be replayed; publish and commit nothing"),
) -> None:
    """Re-publish records of <topic>.dlq to <topic>; progress is committed, so a second run goes on."""
    with console.status(f"replaying {topic}.dlq…"):
        report = replay_dlq(settings_of(ctx), topic, limit=limit, dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    console.print(f"{verb} {report.replayed} record(s) from {report.source} to {report.target}", highlight=False)
    for error_class, n in sorted(report.by_error_class.items()):
        console.print(f"  {error_class}: {n}", highlight=False)
    console.print(f"{report.remaining} record(s) left in {report.source}", highlight=False)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--to-time: not an ISO 8601 time: {value!r}") from None


@app.command()
def reset(
    ctx: typer.Context,
    group: str = typer.Option(..., "--group", "-g", help="consumer group to move"),
    topic: str = typer.Option(..., "--topic", "-t", help="topic whose offsets to move"),
    to_time: str | None = typer.Option(None, "--to-time", help="first record at or after this ISO time (with zone)"),
    to_offset: int | None = typer.Option(None, "--to-offset", help="this offset on every partition (clamped to the log)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the current and target offsets; change nothing"),
) -> None:
    """Rewind a stopped consumer group: Kafka committed offsets and the consumer_offsets table both."""
    report = reset_group(
        settings_of(ctx), group, topic, to_time=_time(to_time), to_offset=to_offset, dry_run=dry_run
    )
    table = Table("partition", "kafka committed", "consumer_offsets", "target")
    for p in report.partitions:
        table.add_row(str(p.partition), str(p.kafka_before), str(p.db_before), str(p.target))
    console.print(table)
    console.print("dry run: nothing changed" if dry_run else f"group {group} reset on {topic}", highlight=False)
