"""``insights replay dlq | purge | reset``: operators' tools to re-drive or drop records (sinks are idempotent)."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.table import Table

from insights.cli.context import console, settings_of
from core.errors import ConfigError
from streams.replay import NOT_REPLAYABLE, purge_dlq, replay_dlq, reset_group

app = typer.Typer(
    help="Re-publish or purge dead letters, or rewind a consumer group (Kafka and PostgreSQL offsets).",
    no_args_is_help=True,
)


@app.command()
def dlq(
    ctx: typer.Context,
    topic: str = typer.Option(..., "--topic", "-t", help="the event topic whose <topic>.dlq to replay"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="replay at most this many records"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be replayed; publish and commit nothing"),
    include_class: list[str] = typer.Option(
        [], "--include-class", metavar="CLASS",
        help=f"also re-send dead letters of this class, which fails again unless something changed "
        f"(skipped by default: {', '.join(sorted(NOT_REPLAYABLE))}); repeatable",
    ),
) -> None:
    """Re-publish records of <topic>.dlq to <topic>; progress is committed, so a second run goes on."""
    with console.status(f"replaying {topic}.dlq…"):
        report = replay_dlq(settings_of(ctx), topic, limit=limit, dry_run=dry_run, include=include_class)
    console.print(f"{report.pending} record(s) pending in {report.source}", highlight=False, soft_wrap=True)
    verb = "would replay" if dry_run else "replayed"
    console.print(f"{verb} {report.replayed} record(s) from {report.source} to {report.target}", highlight=False, soft_wrap=True)
    for error_class, n in sorted(report.by_error_class.items()):
        console.print(f"  {error_class}: {n}", highlight=False, soft_wrap=True)
    if report.skipped:
        classes = ", ".join(f"{c}: {n}" for c, n in sorted(report.skipped.items()))
        console.print(
            f"{'would skip' if dry_run else 'skipped'} {sum(report.skipped.values())} record(s) that cannot succeed "
            f"again ({classes}); to re-send them, run with "
            + " ".join(f"--include-class {c}" for c in sorted(report.skipped)),
            highlight=False, soft_wrap=True,
        )
    if dry_run:
        console.print("dry run: nothing published or committed", highlight=False, soft_wrap=True)
    else:
        console.print(f"{report.remaining} record(s) left in {report.source}", highlight=False, soft_wrap=True)


@app.command()
def purge(
    ctx: typer.Context,
    topic: str = typer.Option(..., "--topic", "-t", help="the event topic whose <topic>.dlq to purge"),
    yes: bool = typer.Option(False, "--yes", "-y", help="purge without asking (required when not interactive)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be dropped; drop nothing"),
) -> None:
    """Drop every record of <topic>.dlq so far (Kafka DeleteRecords): dead letters you chose not to replay."""
    import sys

    settings = settings_of(ctx)
    plan = purge_dlq(settings, topic, dry_run=True)
    console.print(
        f"{plan.source}: {plan.records} record(s) in the log, {plan.pending} of them not yet replayed",
        highlight=False,
        soft_wrap=True,
    )
    if dry_run or not plan.records:
        console.print("nothing to purge" if not plan.records else "dry run: nothing dropped", highlight=False, soft_wrap=True)
        return
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"purging {plan.source} drops {plan.pending} unreplayed dead letter(s): pass --yes")
        typer.confirm(f"drop them for good ({plan.pending} not replayed)?", abort=True)
    done = purge_dlq(settings, topic)
    console.print(f"purged {done.records} record(s) from {done.source} ({done.pending} not replayed)", highlight=False, soft_wrap=True)


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
    shift_by: int | None = typer.Option(None, "--shift-by", help="move each partition by N (negative: back), clamped to the log"),
    to_earliest: bool = typer.Option(False, "--to-earliest", help="the first offset each partition still holds"),
    to_latest: bool = typer.Option(False, "--to-latest", help="the end of each partition (skip everything so far)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the current and target offsets; change nothing"),
) -> None:
    """Rewind a stopped consumer group: Kafka committed offsets and the consumer_offsets table both."""
    report = reset_group(
        settings_of(ctx), group, topic, to_time=_time(to_time), to_offset=to_offset, shift_by=shift_by,
        to_earliest=to_earliest, to_latest=to_latest, dry_run=dry_run,
    )
    table = Table("partition", "kafka committed", "consumer_offsets", "target")
    for p in report.partitions:
        table.add_row(str(p.partition), str(p.kafka_before), str(p.db_before), str(p.target))
    console.print(table)
    console.print("dry run: nothing changed" if dry_run else f"group {group} reset on {topic}", highlight=False)
