"""``insights dlq list | show | replay | purge``: the dead-letter workflow (``streams.dlq_workflow``).

``insights replay dlq`` is the older spelling of an unfiltered replay and stays.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import typer

from core.settings import Settings
from insights.cli.confirm import confirm
from insights.cli.context import console, settings_of
from insights.cli.replay_events_cmd import parse_time
from streams.replay_events import parse_partition_offsets

app = typer.Typer(help="Dead letters: count them, look at them, re-drive them after a fix, purge them.",
                  no_args_is_help=True)

TOPIC_HELP = "the event (or CDC) topic whose <topic>.dlq to use"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _existing_sources(settings: Settings) -> list[str]:
    """Declared topics whose DLQ exists on the broker."""
    from streams.kafka import admin_client  # lazy: CLI start-up of the other commands
    from streams.topics import declared_topics, dlq_name

    names = [t.name for t in declared_topics(settings) if not t.name.endswith(".dlq")]
    present = set(admin_client(settings.kafka).list_topics(timeout=30).topics)
    return [n for n in names if dlq_name(n) in present]


@app.command("list")
def list_(
    ctx: typer.Context,
    topic: list[str] = typer.Option([], "--topic", "-t", help=TOPIC_HELP + " (repeatable; default: every declared one)"),
) -> None:
    """Per DLQ: counts by error class and reason, oldest and newest, replayed, failed again, purged."""
    from streams.dlq_workflow import summarize  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    for source in topic or _existing_sources(settings):
        s = summarize(settings, source)
        console.print(
            f"{s.dlq}: {s.in_log} in the log, {s.pending} pending, {s.replayed} replayed, "
            f"{s.failed_again} failed again after a replay, {s.purged} purged or expired",
            highlight=False, soft_wrap=True,
        )
        if not s.in_log:
            continue
        # one plain line per class (for scripts), then the reasons within it
        for error_class, g in sorted(s.by_class.items()):
            console.print(f"  {error_class}: {g.count} (oldest {_when(g.oldest)}, newest {_when(g.newest)})",
                          highlight=False, soft_wrap=True, markup=False)
            for (cls, reason), r in sorted(s.by_reason.items(), key=lambda kv: (-kv[1].count, kv[0])):
                if cls == error_class:
                    console.print(f"    {r.count} × {reason}", highlight=False, soft_wrap=True, markup=False)


def _filters(error_class: list[str], reason: str | None, since: str | None, offset: list[str]):  # type: ignore[no-untyped-def]
    from streams.dlq_workflow import Filters  # lazy: CLI start-up of the other commands

    return Filters(
        classes=frozenset(error_class), reason=reason, since=parse_time(since, "--since"),
        offsets=parse_partition_offsets(offset, "--offset"),
    )


def _decoded(settings: Settings, topic: str, value: bytes | None) -> str:
    """The event as JSON when it decodes with its topic's schema; hex otherwise."""
    if value is None:
        return "(no value)"
    try:
        from streams.serde import RecordContext, make_deserializer
        from streams.topics import declared_topics

        subject = next(t.value_subject for t in declared_topics(settings) if t.name == topic)
        if subject is None:
            raise LookupError(topic)
        record = make_deserializer(settings, subject)(value, RecordContext(topic))
        return json.dumps(record, default=str, indent=2, sort_keys=True)
    except Exception as exc:  # noqa: BLE001 - a dead letter is often exactly what does not decode
        return f"(does not decode: {str(exc)[:200]})\nhex: {value.hex()}"


@app.command("show")
def show(
    ctx: typer.Context,
    topic: str = typer.Option(..., "--topic", "-t", help=TOPIC_HELP),
    offset: list[str] = typer.Option([], "--offset", help="P:O of the DLQ record (repeatable)"),
    error_class: list[str] = typer.Option([], "--class", help="only this error class (repeatable)"),
    reason: str | None = typer.Option(None, "--reason", help="only reasons containing this text"),
    since: str | None = typer.Option(None, "--since", help="only dead letters written at or after this ISO time"),
    limit: int = typer.Option(10, "--limit", min=1, help="show at most this many"),
) -> None:
    """Dead letters with their headers and the decoded event (hex where it does not decode)."""
    from streams.dlq_workflow import show as find  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    found = find(settings, topic, _filters(error_class, reason, since, offset), limit)
    if not found:
        console.print("no dead letter matches", highlight=False)
        return
    for record in found:
        console.print(f"--- {topic}.dlq {record.partition}:{record.offset} at {_when(record.when)}",
                      highlight=False, soft_wrap=True, markup=False)
        for name, value in sorted(record.headers.items()):
            console.print(f"{name}: {value.decode('utf-8', 'replace')}", highlight=False, soft_wrap=True, markup=False)
        console.print(f"key: {(record.key or b'').decode('utf-8', 'replace')}", highlight=False, markup=False)
        console.print(_decoded(settings, topic, record.value), highlight=False, soft_wrap=True, markup=False)


@app.command("replay")
def replay(
    ctx: typer.Context,
    topic: str = typer.Option(..., "--topic", "-t", help=TOPIC_HELP),
    error_class: list[str] = typer.Option(
        [], "--class", help="only this class (repeatable); naming corrupt_payload or unknown_schema replays them too"
    ),
    reason: str | None = typer.Option(None, "--reason", help="only reasons containing this text"),
    since: str | None = typer.Option(None, "--since", help="only dead letters written at or after this ISO time"),
    offset: list[str] = typer.Option([], "--offset", help="only the DLQ record at P:O (repeatable)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="replay at most this many"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be replayed; publish nothing"),
) -> None:
    """Re-publish pending dead letters to their topic after a fix; the live consumer stores them.

    A record that fails again is dead-lettered again with its new reason: `insights dlq
    list` counts it as failed again. Classes that a second delivery cannot fix by itself
    (corrupt_payload, unknown_schema) are skipped unless named with --class.
    """
    from streams.dlq_workflow import replay_dead_letters  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    report = replay_dead_letters(settings, topic, _filters(error_class, reason, since, offset), limit=limit,
                                 dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    console.print(f"{report.pending} pending in {report.dlq}; {verb} {sum(report.replayed.values())} to {topic}",
                  highlight=False, soft_wrap=True)
    for error_class_, n in sorted(report.replayed.items()):
        console.print(f"  {verb} {error_class_}: {n}", highlight=False, soft_wrap=True)
    for error_class_, n in sorted(report.left.items()):
        console.print(f"  left by the filters, {error_class_}: {n}", highlight=False, soft_wrap=True)
    for error_class_, n in sorted(report.skipped_classes.items()):
        console.print(f"  skipped {error_class_}: {n} (needs a fix first; replay with --class {error_class_})",
                      highlight=False, soft_wrap=True)
    if dry_run:
        console.print("dry run: nothing published", highlight=False)


@app.command("purge")
def purge(
    ctx: typer.Context,
    topic: str = typer.Option(..., "--topic", "-t", help=TOPIC_HELP),
    before: str = typer.Option(..., "--before", help="an ISO time (with zone), an offset for every partition, or P:O"),
    yes: bool = typer.Option(False, "--yes", "-y", help="purge without asking (required when not interactive)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be dropped; drop nothing"),
) -> None:
    """Drop dead letters before a time or an offset for good (Kafka DeleteRecords)."""
    from streams.dlq_workflow import purge_before  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    when: datetime | None = None
    offsets: dict[int, int] | None = None
    if re.fullmatch(r"\d+:\d+", before):
        offsets = parse_partition_offsets([before], "--before")
    elif before.isdigit():
        from streams.dlq_workflow import log_bounds
        from streams.kafka import admin_client
        from streams.topics import dlq_name

        bounds = log_bounds(settings, admin_client(settings.kafka), dlq_name(topic))
        offsets = {p: int(before) for p in bounds.ends}
    else:
        when = parse_time(before, "--before")
    plan = purge_before(settings, topic, before_time=when, before_offsets=offsets, dry_run=True)
    console.print(f"{plan.dlq}: would drop {plan.records} record(s), {plan.pending} of them never replayed "
                  f"(new log start {', '.join(f'{p}:{o}' for p, o in sorted(plan.targets.items()))})",
                  highlight=False, soft_wrap=True)
    if dry_run or not plan.records:
        console.print("nothing to purge" if not plan.records else "dry run: nothing dropped", highlight=False)
        return
    confirm(f"drop {plan.records} dead letter(s) for good?", yes=yes, refused="nothing purged")
    done = purge_before(settings, topic, before_offsets=plan.targets)
    console.print(f"purged {done.records} record(s) from {done.dlq}", highlight=False, soft_wrap=True)
