"""``insights produce scrape | alerts``: a simulated Amazon market, published to Kafka."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import typer
from confluent_kafka.admin import AdminClient
from rich.table import Table

from core.errors import ConfigError, InsightsError
from core.settings import Settings
from insights.cli.context import console, err_console, settings_of
from insights.cli.progress import reporting
from insights.generate.run import Plan, PublishInterrupted, Summary, publish, topic_for
from streams.admin import admin_client, drift_of, ensure_topics, live_topics
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
SEED = typer.Option(0, "--seed", help="random seed: the same seed and sizes give the same market (event ids differ per run)")
SPAN = typer.Option(7.0, "--span-days", min=0.001, help="event times cover this many days")
START = typer.Option(None, "--start", help="first event time, ISO 8601 with a zone (default: span-days before now)")
RUN_ID = typer.Option(
    None, "--run-id",
    help="reuse a past run's event ids (printed at the end of every run): with the same seed, sizes and "
    "--start, the very same events again, i.e. redeliveries",
)
CREATE_TOPICS = typer.Option(
    False, "--create-topics",
    help="create the declared topics first when missing (what `insights topics create` does)",
)

#: how long to wait for the broker's metadata before saying it does not answer
TOPIC_CHECK_TIMEOUT_S = 10.0


class TopicMissingError(InsightsError):
    """The event topic does not exist and producing was not asked to create it."""


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


def _run_id(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise typer.BadParameter(f"not a UUID: {value!r}", param_hint="--run-id") from None


def _check_topic(settings: Settings, plan: Plan, create: bool) -> None:
    """The topic must exist; ``produce`` never creates one behind the operator's back.

    Topics are declared infrastructure (partitions, retention, replication, ACLs): a
    producer that created them would, on a mistyped INSIGHTS_TOPIC_PREFIX, quietly send
    every event where no consumer reads. So a missing topic stops the command with the
    fix, unless --create-topics asks for exactly what `insights topics create` does.
    """
    spec = topic_for(settings, plan.kind)
    if create:
        report = ensure_topics(settings, event_topics(settings))
        for name in report.created:
            err_console.print(f"created topic {name}", highlight=False)
        drifts = [(o.spec.name, d) for o in report.topics if o.spec.name == spec.name for d in o.drift]
    else:
        live = live_topics(_quiet_admin(settings), [spec.name], TOPIC_CHECK_TIMEOUT_S).get(spec.name)
        if live is None:
            raise TopicMissingError(
                f"topic {spec.name} does not exist: create the topics with `insights topics create` "
                "(or pass --create-topics)"
            )
        drifts = [(spec.name, d) for d in drift_of(spec, live)]
    for name, drift in drifts:
        err_console.print(f"warning: topic {name} drifts from its declaration: {drift}", highlight=False)


def _quiet_admin(settings: Settings) -> AdminClient:
    """An admin client for one metadata question: librdkafka's own log lines (connection
    failures, queue purges at exit) would bury the one line this command prints instead.
    An operator's own ``log_level`` in INSIGHTS_KAFKA_OVERRIDES still wins."""
    if "log_level" in settings.kafka.overrides:
        return admin_client(settings)
    return AdminClient(settings.kafka.client_config(log_level=2))


def _summary_table(summary: Summary) -> Table:
    table = Table("", "", show_header=False, box=None)
    for label, value in (
        ("topic", summary.topic),
        ("run id", str(summary.run_id)),
        ("events", f"{summary.events:,}"),
        ("duplicates", f"{summary.duplicates:,}"),
        ("reordered", f"{summary.reordered:,}"),
        ("records sent", f"{summary.records:,}"),
        ("bytes", f"{summary.bytes:,}"),
        ("elapsed", f"{summary.elapsed_s:.1f} s"),
        ("records/s", f"{summary.rate:,.0f}"),
    ):
        table.add_row(label, value)
    return table


def _run(ctx: typer.Context, plan: Plan, rate: float, create_topics: bool) -> None:
    settings = settings_of(ctx)
    plan = plan.with_run_id()
    _check_topic(settings, plan, create_topics)
    task = f"producing {plan.kind}"
    try:
        with reporting("produce", "events") as progress:

            def show(s: Summary) -> None:
                progress.update(
                    task, s.events, plan.events,
                    note=f"+{s.duplicates:,} dup, {s.reordered:,} reordered",
                )

            summary = publish(settings, plan, rate=rate, on_progress=show)
            progress.finish(task)
    except PublishInterrupted as stopped:
        # what was sent, then the one line of main.run (exit 130)
        console.print(_summary_table(stopped.summary))
        raise
    console.print(_summary_table(summary))
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
    run_id: str | None = RUN_ID,
    create_topics: bool = CREATE_TOPICS,
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
        run_id=_run_id(run_id),
    )
    _run(ctx, plan, rate, create_topics)


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
    run_id: str | None = RUN_ID,
    create_topics: bool = CREATE_TOPICS,
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
        run_id=_run_id(run_id),
    )
    _run(ctx, plan, rate, create_topics)
