"""``insights produce scrape | alerts``: a simulated Amazon market, published to Kafka."""

from __future__ import annotations

from datetime import datetime, timedelta

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from insights.cli.context import console, err_console, settings_of
from core.errors import ConfigError
from insights.generate.run import Plan, Summary, publish
from core.settings import Settings
from streams.admin import ensure_topics
from streams.topics import event_topics

app = typer.Typer(
    help="Publish plausible Amazon scrape or alert events (prices, ratings, ranks, stock-outs) to Kafka.",
    no_args_is_help=True,
)

PRODUCTS = typer.Option(100, "--products", "-n", min=1, help="number of simulated products (ASINs)")
EVENTS = typer.Option(10_000, "--events", "-m", min=1, help="distinct events to send (duplicates come on top)")
RATE = typer.Option(0.0, "--rate", "-r", min=0.0, help="events per second; 0 = as fast as possible")
DUPLICATES = typer.Option(0.0, "--duplicates", min=0.0, max=1.0, help="probability an event is re-sent (1-3 exact copies, shortly after)")
OUT_OF_ORDER = typer.Option(0.0, "--out-of-order", min=0.0, max=1.0, help="probability an event opens a shuffled window of its key's next events")
SEED = typer.Option(0, "--seed", help="random seed: the same seed and sizes give the same events")
SPAN = typer.Option(7.0, "--span-days", min=0.001, help="event times cover this many days")
START = typer.Option(None, "--start", help="first event time, ISO 8601 with a zone (default: span-days before now)")


def _start(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--start: not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ConfigError("--start: give a time zone, e.g. 2025-01-01T00:00:00+00:00")
    return parsed


def _ensure_topics(settings: Settings) -> None:
    report = ensure_topics(settings, event_topics(settings))
    for name in report.created:
        console.print(f"created topic {name}", highlight=False)
    for outcome in report.topics:
        for drift in outcome.drift:
            err_console.print(f"warning: topic {outcome.spec.name} drifts: {drift}", highlight=False)


def _run(ctx: typer.Context, plan: Plan, rate: float) -> None:
    settings = settings_of(ctx)
    _ensure_topics(settings)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(f"producing {plan.kind}", total=plan.events, extra="")

        def show(s: Summary) -> None:
            progress.update(
                task,
                completed=s.events,
                extra=f"+{s.duplicates} dup, {s.reordered} reordered, {s.rate:,.0f}/s",
            )

        summary = publish(settings, plan, rate=rate, on_progress=show)
    table = Table("", "", show_header=False, box=None)
    for label, value in (
        ("topic", summary.topic),
        ("events", f"{summary.events:,}"),
        ("duplicates", f"{summary.duplicates:,}"),
        ("reordered", f"{summary.reordered:,}"),
        ("records sent", f"{summary.records:,}"),
        ("bytes", f"{summary.bytes:,}"),
        ("elapsed", f"{summary.elapsed_s:.1f} s"),
        ("records/s", f"{summary.rate:,.0f}"),
    ):
        table.add_row(label, value)
    console.print(table)
    spread = ", ".join(f"{p}:{n}" for p, n in summary.partitions.items())
    console.print(f"records per partition: {spread}", highlight=False)


@app.command()
def scrape(
    ctx: typer.Context,
    products: int = PRODUCTS,
    events: int = EVENTS,
    rate: float = RATE,
    duplicates: float = DUPLICATES,
    out_of_order: float = OUT_OF_ORDER,
    seed: int = SEED,
    span_days: float = SPAN,
    start: str | None = START,
) -> None:
    """Scrape events: prices that drift and drop, ratings, reviews, BSR, stock-outs, features."""
    plan = Plan(
        "scrape",
        products,
        events,
        seed=seed,
        duplicates=duplicates,
        out_of_order=out_of_order,
        span=timedelta(days=span_days),
        start=_start(start),
    )
    _run(ctx, plan, rate)


@app.command()
def alerts(
    ctx: typer.Context,
    products: int = PRODUCTS,
    events: int = EVENTS,
    rate: float = RATE,
    duplicates: float = DUPLICATES,
    out_of_order: float = OUT_OF_ORDER,
    seed: int = SEED,
    span_days: float = SPAN,
    start: str | None = START,
    rules: int = typer.Option(12, "--rules", min=0, help="alerts reference rule ids 1..RULES (or none)"),
) -> None:
    """Alert events raised from the same simulation (price drops, stock-outs, rating and rank moves).

    Alerts name the ASINs that ``produce scrape`` with the same --seed and --products creates.
    """
    plan = Plan(
        "alerts",
        products,
        events,
        seed=seed,
        duplicates=duplicates,
        out_of_order=out_of_order,
        span=timedelta(days=span_days),
        start=_start(start),
        rules=rules,
    )
    _run(ctx, plan, rate)
