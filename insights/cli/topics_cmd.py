"""``insights topics create | list | describe``: the declared topics against the live broker."""

from __future__ import annotations

import typer
from rich.table import Table

from insights.cli.context import console, settings_of
from core.errors import InsightsError
from streams.admin import TopicDescription, describe_topics, ensure_topics
from streams.topics import declared_topics

app = typer.Typer(help="Create the declared Kafka topics and report drift from the declaration.", no_args_is_help=True)


class TopicDriftError(InsightsError):
    """Live topics differ from their declaration (and were not, or could not be, fixed)."""

    exit_code = 3


def _table(*columns: str) -> Table:
    """A table whose first column (topic names) folds instead of being cut with an ellipsis."""
    table = Table()
    table.add_column(columns[0], overflow="fold")
    for column in columns[1:]:
        table.add_column(column)
    return table


def _ms(value: str | None) -> str:
    return "-" if value is None else value


@app.command()
def create(
    ctx: typer.Context,
    fix: bool = typer.Option(
        False,
        "--fix",
        help="also repair drift: add partitions up to the declared count and set declared configs",
    ),
) -> None:
    """Create missing topics (idempotent); report drift of existing ones, exit 3 if any remains."""
    settings = settings_of(ctx)
    with console.status("talking to the broker…"):
        report = ensure_topics(settings, declared_topics(settings), fix=fix)
    table = _table("topic", "status", "details")
    for outcome in report.topics:
        details = "; ".join([*(f"fixed {d}" for d in outcome.fixed), *(str(d) for d in outcome.drift)])
        table.add_row(outcome.spec.name, outcome.status, details or "-")
    console.print(table)
    if report.drifted:
        hint = "" if fix else " (run with --fix to repair what can be repaired)"
        raise TopicDriftError(f"{len(report.drifted)} topic(s) differ from their declaration{hint}")


def _state(d: TopicDescription) -> str:
    if not d.exists:
        return "missing"
    return "drift" if d.drift else "ok"


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """One line per declared topic: live partitions, replication, messages, state."""
    settings = settings_of(ctx)
    with console.status("talking to the broker…"):
        described = describe_topics(settings, declared_topics(settings))
    table = _table("topic", "partitions", "replication", "end offsets (sum)", "state")
    for d in described:
        if d.live is None:
            table.add_row(d.spec.name, str(d.spec.partitions), str(d.spec.replication_factor), "-", "missing")
            continue
        table.add_row(
            d.spec.name,
            str(d.live.partitions),
            str(d.live.replication_factor),
            str(sum(d.live.end_offsets.values())),
            _state(d),
        )
    console.print(table)


@app.command()
def describe(
    ctx: typer.Context,
    topic: list[str] = typer.Argument(None, help="topic names (default: every declared topic)"),
) -> None:
    """Declared vs live configuration, end offset per partition, and drift of each topic."""
    settings = settings_of(ctx)
    specs = declared_topics(settings)
    if topic:
        unknown = sorted(set(topic) - {s.name for s in specs})
        if unknown:
            raise InsightsError(f"not a declared topic: {', '.join(unknown)}")
        specs = [s for s in specs if s.name in topic]
    with console.status("talking to the broker…"):
        described = describe_topics(settings, specs)
    for d in described:
        console.rule(f"{d.spec.name} ({_state(d)})")
        if d.spec.doc:
            console.print(d.spec.doc, highlight=False)
        table = Table("setting", "declared", "live")
        live = d.live
        table.add_row("partitions", str(d.spec.partitions), _ms(live and str(live.partitions)))
        table.add_row("replication.factor", str(d.spec.replication_factor), _ms(live and str(live.replication_factor)))
        for key, value in sorted(d.spec.config().items()):
            table.add_row(key, value, _ms(live.config.get(key) if live else None))
        console.print(table)
        if live is not None:
            offsets = ", ".join(f"{p}:{o}" for p, o in sorted(live.end_offsets.items()))
            console.print(f"end offsets: {offsets}", highlight=False)
            leaders = ", ".join(
                f"{p}:{st.leader if not st.offline else 'none'}/{','.join(map(str, st.isr))}"
                for p, st in sorted(live.states.items())
            )
            console.print(f"leader/in-sync replicas: {leaders}", highlight=False)
        for drift in d.drift:
            console.print(f"[yellow]drift[/] {drift}", highlight=False)
