"""``insights archive export | verify | restore``: history beyond Kafka's and the tables' retention.

What an archive holds and why it is shaped so: ``streams.archive``. Replaying one:
``insights replay events <sink> --from-archive DIR`` (or ``--to-topic T``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from core.errors import ConfigError, InsightsError
from insights.cli.context import console, settings_of
from insights.cli.progress import reporting
from insights.cli.replay_events_cmd import parse_partitions, parse_time
from streams.replay_events import RangeRequest, parse_partition_offsets

app = typer.Typer(help="Archives of topics and of dropped partitions: Avro container files and a manifest.",
                  no_args_is_help=True)


class ArchiveDamaged(InsightsError):
    """`archive verify` found problems."""


@app.command()
def export(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="the archive directory (created; files are added to its manifest)"),
    topic: str = typer.Option(..., "--topic", "-t", help="the topic to archive"),
    partitions: str | None = typer.Option(None, "--partitions", help="only these partitions, e.g. 0,2"),
    from_time: str | None = typer.Option(None, "--from-time", help="first record at or after this ISO time (with zone)"),
    to_time: str | None = typer.Option(None, "--to-time", help="stop before the first record at or after this time"),
    from_offset: list[str] = typer.Option([], "--from-offset", help="P:O, first offset of partition P (repeatable)"),
    to_offset: list[str] = typer.Option([], "--to-offset", help="P:O, stop before offset O of partition P (repeatable)"),
) -> None:
    """Write a range of a topic (everything by default, up to the end as of now) to DIR."""
    from streams.archive import export_records  # lazy: CLI start-up of the other commands
    from streams.kafka import admin_client
    from streams.replay_events import compute_ranges
    from streams.topics import declared_topics

    settings = settings_of(ctx)
    request = RangeRequest(
        topics=(topic,), partitions=parse_partitions(partitions),
        from_time=parse_time(from_time, "--from-time"), to_time=parse_time(to_time, "--to-time"),
        from_offsets=parse_partition_offsets(from_offset, "--from-offset"),
        to_offsets=parse_partition_offsets(to_offset, "--to-offset"),
    )
    ranges = compute_ranges(admin_client(settings.kafka), [topic], request, "is the name right? `insights topics describe`")
    subject = next((t.value_subject for t in declared_topics(settings) if t.name == topic), None)
    with reporting("archive export", "events") as reporter:
        files = export_records(settings, directory, ranges, value_subject=subject,
                               progress=lambda done, total: reporter.update(topic, done, total))
        reporter.finish(topic)
    for f in files:
        console.print(f"{f.file}: {f.count:,} record(s), offsets {f.start_offset}-{f.end_offset}, "
                      f"{f.first_time or '-'} .. {f.last_time or '-'}, sha256 {f.sha256[:16]}…",
                      highlight=False, soft_wrap=True)
    console.print(f"exported {sum(f.count for f in files):,} record(s) of {topic} in {len(files)} file(s) to {directory}",
                  highlight=False, soft_wrap=True)


@app.command()
def verify(
    directory: Path = typer.Argument(..., help="the archive directory"),
) -> None:
    """Check every file against the manifest: present, SHA-256, record count, offsets in range."""
    from streams.archive import verify as check  # lazy: CLI start-up of the other commands

    result = check(directory)
    for problem in result.problems:
        console.print(f"problem: {problem}", highlight=False, soft_wrap=True, markup=False)
    if result.problems:
        raise ArchiveDamaged(f"{directory}: {len(result.problems)} problem(s) in {result.files} file(s)")
    console.print(f"{directory}: {result.files} file(s), {result.records:,} record(s): all match the manifest",
                  highlight=False, soft_wrap=True)


@app.command()
def restore(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="the archive directory (`insights db partitions prune --archive`)"),
    table: str = typer.Option(..., "--table", help="the partitioned table to load back"),
    partition: str | None = typer.Option(None, "--partition", help="only this archived partition (default: all of the table)"),
) -> None:
    """Load pruned partitions back: the partition is created again and its rows inserted as they were.

    Rows already there are left alone (ON CONFLICT DO NOTHING), so a second restore adds
    nothing. A partition past its table's retention goes again at the next prune: change
    the policy first (`insights db partitions policy`) to keep it.
    """
    from streams.archive import restore_table  # lazy: CLI start-up of the other commands
    from streams.pg import connect

    settings = settings_of(ctx)
    if "." in table or not table.replace("_", "").isalnum():
        raise ConfigError(f"--table: expected a table name such as product_snapshots, got {table!r}")
    with connect(settings.pg, "archive-restore") as conn, reporting("archive restore", "rows") as reporter:
        done = restore_table(conn, directory, table, partition=partition,
                             progress=lambda n, total: reporter.update(table, n, total))
        reporter.finish(table)
    for item in done:
        console.print(f"{item.partition}: {item.inserted:,} of {item.rows:,} archived row(s) inserted "
                      f"({item.rows - item.inserted:,} already there)", highlight=False, soft_wrap=True)
