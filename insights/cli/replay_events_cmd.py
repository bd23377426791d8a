"""``insights replay events <sink>``: re-consume a fixed range of a sink's topics beside its live group.

See ``streams.replay_events`` for what makes it safe (its own group in consumer_offsets, a
range fixed when it first starts, progress in the batch transaction). Ctrl-C stops after
the batch in hand; the same command continues where it stopped; ``--restart`` starts over.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from consumers import registry as sinks
from core.errors import ConfigError, Interrupted
from core.settings import Settings
from insights.cli.consume_cmd import SINK_HELP, SinkName
from insights.cli.context import console, settings_of
from insights.cli.progress import reporting
from insights.cli.service_opts import service
from streams.consumer.transaction import BatchResult
from streams.archive import archived_records, republish
from streams.replay_events import (
    ArchiveLoop,
    RangeLoop,
    RangeRequest,
    ReplayPlan,
    parse_partition_offsets,
    plan_replay,
    replay_group,
    restart_archive_replay,
)

#: how the loop's counters read in the closing summary (unknown ones keep their own name)
COUNTER_WORDS = {
    "consumed": "read",
    "stored": "stored",
    "skipped": "already replayed before a restart of this run",
    "dead_letters": "dead-lettered",
}


def parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option}: not an ISO 8601 time: {value!r}") from None
    if when.tzinfo is None:
        raise ConfigError(f"{option} needs a time zone, e.g. 2025-01-01T00:00:00+00:00")
    return when


def parse_partitions(value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        found = tuple(sorted({int(p) for p in value.split(",") if p.strip()}))
    except ValueError:
        raise ConfigError(f"--partitions: expected a list like 0,2,5, got {value!r}") from None
    if any(p < 0 for p in found):
        raise ConfigError("--partitions: partitions are 0 or more")
    return found


def counts_line(totals: BatchResult) -> str:
    return ", ".join(f"{value:,} {COUNTER_WORDS.get(name, name.replace('_', ' '))}" for name, value in vars(totals).items())


def plan_table(plan: ReplayPlan) -> Table:
    table = Table("topic", "partition", "from offset", "to offset", "events", "done")
    for r in plan.ranges:
        table.add_row(r.topic, str(r.partition), str(r.start), str(r.end), f"{r.events:,}", f"{r.done:,}")
    table.add_row("total", "", "", "", f"{plan.events:,}", f"{plan.done:,}")
    return table


def events(
    ctx: typer.Context,
    sink: SinkName = typer.Argument(..., help=SINK_HELP, show_default=False),  # type: ignore[valid-type]
    topic: list[str] = typer.Option([], "--topic", "-t", help="only this topic of the sink's (repeatable)"),
    partitions: str | None = typer.Option(None, "--partitions", help="only these partitions, e.g. 0,2"),
    from_time: str | None = typer.Option(None, "--from-time", help="first record at or after this ISO time (with zone)"),
    to_time: str | None = typer.Option(None, "--to-time", help="stop before the first record at or after this time"),
    from_offset: list[str] = typer.Option([], "--from-offset", help="P:O, first offset of partition P (repeatable)"),
    to_offset: list[str] = typer.Option([], "--to-offset", help="P:O, stop before offset O of partition P (repeatable)"),
    name: str | None = typer.Option(None, "--name", help="the replay's name: its progress is kept under it (default: the sink)"),
    restart: bool = typer.Option(False, "--restart", help="compute the range again and start over"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print each partition's range and event count; write nothing"),
    from_archive: Path | None = typer.Option(None, "--from-archive", help="read the records from this archive "
                                             "directory (`insights archive export`) instead of Kafka"),
    to_topic: str | None = typer.Option(None, "--to-topic", help="with --from-archive: re-publish the records to "
                                        "this topic instead of storing them"),
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535, help="/metrics and /healthz port (0 = off)"),
) -> None:
    """Re-consume a range of the sink's topics into it while the live group keeps running.

    Without range options, every record of every partition up to the log end as of the
    first start. Rows are written through the same idempotent path as live consumption:
    a replay of what is stored changes nothing. Ctrl-C stops after the batch in hand;
    the same command again continues where it stopped.
    """
    settings = settings_of(ctx)
    spec = sinks.get(sink.value)
    if to_topic is not None and from_archive is None:
        raise ConfigError("--to-topic re-publishes an archive: give --from-archive DIR too")
    if from_archive is not None:
        if partitions or from_time or to_time or from_offset or to_offset:
            raise ConfigError("--from-archive replays the archive's ranges: export another range instead")
        replay_archive(settings, spec.name, from_archive, topics=topic, name=name or f"{spec.name}.archive",
                       restart=restart, dry_run=dry_run, to_topic=to_topic, metrics_port=metrics_port)
        return
    declared = spec.topics(settings)
    unknown = [t for t in topic if t not in declared]
    if unknown:
        raise ConfigError(f"--topic {unknown[0]}: sink {spec.name} reads {', '.join(declared)}")
    request = RangeRequest(
        topics=tuple(topic),
        partitions=parse_partitions(partitions),
        from_time=parse_time(from_time, "--from-time"),
        to_time=parse_time(to_time, "--to-time"),
        from_offsets=parse_partition_offsets(from_offset, "--from-offset"),
        to_offsets=parse_partition_offsets(to_offset, "--to-offset"),
    )
    replay_name = name or spec.name
    plan = plan_replay(
        settings, spec.name, list(topic) or declared, request, name=replay_name, restart=restart, dry_run=dry_run,
        hint=spec.missing_hint,
    )
    if dry_run:
        console.print(plan_table(plan))
        console.print(f"dry run: replay {replay_name!r} would read {plan.remaining:,} event(s); nothing written",
                      highlight=False, soft_wrap=True)
        return
    if plan.remaining == 0:
        console.print(f"replay {replay_name!r} is complete ({plan.events:,} event(s)); --restart runs it again",
                      highlight=False, soft_wrap=True)
        return
    what = "resuming" if plan.resumed and plan.done else "starting"
    console.print(f"replay {replay_name!r} of {spec.name}: {what} at {plan.done:,} of {plan.events:,} event(s) "
                  f"(group {plan.group})", highlight=False, soft_wrap=True)
    run_replay(settings, plan, metrics_port=metrics_port)


def run_replay(settings: Settings, plan: ReplayPlan, *, metrics_port: int = 0) -> None:
    """Run ``plan`` under the service frame (Ctrl-C stops it cleanly) and print its summary."""
    frame = service(settings, f"replay-{plan.sink}", metrics_port=metrics_port, stuck_after=None,
                    unreachable_after=60.0)
    started = time.monotonic()
    with frame, reporting("replay", "events") as reporter:
        loop = sinks.build_loop(
            settings, plan.sink, group=plan.group, stop=frame.stop, registry=frame.registry, health=frame.health,
            loop_class=RangeLoop, ranges=plan.ranges,
            progress=lambda done, total: reporter.update(plan.name, done, total),
        )
        assert isinstance(loop, RangeLoop)
        totals = loop.run()
        reporter.finish(plan.name)
    elapsed = max(time.monotonic() - started, 1e-6)
    console.print(f"replay {plan.name!r}: {counts_line(totals)} in {elapsed:,.1f}s "
                  f"({totals.consumed / elapsed:,.0f} events/s)", highlight=False, soft_wrap=True)
    if not loop.completed:
        done = sum(min(max(loop.read_to.get(r.key, r.start) - r.start, 0), r.events) for r in plan.ranges)
        raise Interrupted(f"replay {plan.name!r} stopped at {done:,} of {plan.events:,} event(s): "
                          "run the same command again to continue")
    console.print(f"replay {plan.name!r} complete: {plan.events:,} event(s) in range", highlight=False, soft_wrap=True)


def replay_archive(
    settings: Settings, sink: str, directory: Path, *, topics: list[str], name: str, restart: bool, dry_run: bool,
    to_topic: str | None, metrics_port: int,
) -> None:
    """``replay events --from-archive``: into the sink (progress under the replay's group), or
    re-published to ``to_topic``."""
    files = archived_records(directory, topics or None)
    if not topics:
        # only the sink's kind of event: an archive may hold several topics, and topic names
        # differ between environments, so the value subject recorded at export decides
        subject = sinks.get(sink).make().subject
        files = [e for e in files if e.get("value_subject") == subject]
    if not files:
        raise ConfigError(f"{directory} holds no archived records" + (
            f" of {', '.join(topics)}" if topics else f" of {sink}'s events (name the archived topic with --topic)"))
    total = sum(e["count"] for e in files)
    if dry_run:
        table = Table("file", "topic", "partition", "from offset", "to offset", "events")
        for e in files:
            table.add_row(e["file"], e["topic"], str(e["partition"]), str(e["start_offset"]), str(e["end_offset"]),
                          f"{e['count']:,}")
        console.print(table)
        target = f"to {to_topic}" if to_topic else f"into {sink}"
        console.print(f"dry run: would replay {total:,} archived event(s) {target}; nothing written", highlight=False)
        return
    started = time.monotonic()
    if to_topic is not None:
        with reporting("replay", "events") as reporter:
            sent = republish(settings, directory, files, to_topic,
                             progress=lambda done, all_: reporter.update(name, done, all_))
            reporter.finish(name)
        elapsed = max(time.monotonic() - started, 1e-6)
        console.print(f"re-published {sent:,} archived event(s) to {to_topic} in {elapsed:,.1f}s "
                      f"({sent / elapsed:,.0f} events/s)", highlight=False, soft_wrap=True)
        return
    group = replay_group(settings, name)
    if restart:
        restart_archive_replay(settings, group, files)
    console.print(f"replay {name!r} of {sink} from {directory}: {total:,} archived event(s) (group {group})",
                  highlight=False, soft_wrap=True)
    frame = service(settings, f"replay-{sink}", metrics_port=metrics_port, stuck_after=None, unreachable_after=60.0)
    with frame, reporting("replay", "events") as reporter:
        loop = sinks.build_loop(
            settings, sink, group=group, stop=frame.stop, registry=frame.registry, health=frame.health,
            loop_class=ArchiveLoop, directory=directory, files=files,
            progress=lambda done, all_: reporter.update(name, done, all_),
        )
        assert isinstance(loop, ArchiveLoop)
        totals = loop.run()
        reporter.finish(name)
    elapsed = max(time.monotonic() - started, 1e-6)
    console.print(f"replay {name!r}: {counts_line(totals)} in {elapsed:,.1f}s ({totals.consumed / elapsed:,.0f} events/s)",
                  highlight=False, soft_wrap=True)
    if not loop.completed:
        raise Interrupted(f"replay {name!r} stopped after {loop.read:,} of {total:,} archived event(s): "
                          "run the same command again to continue")
    console.print(f"replay {name!r} complete: {total:,} archived event(s)", highlight=False, soft_wrap=True)
