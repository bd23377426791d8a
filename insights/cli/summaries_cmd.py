"""``insights summaries sweep | status``: the product summaries kept by ``insights consume summaries``."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import typer
from rich.table import Table

from insights.cli.context import console, settings_of
from insights.cli.service_opts import metrics_port_option, service, stuck_after_option, unreachable_after_option
from core.errors import InsightsError
from streams.pg import connect

app = typer.Typer(help="Product summaries fed by the CDC topics (docs/summaries.md).", no_args_is_help=True)


class SummariesError(InsightsError):
    """The summaries schema cannot be read or swept."""


def _guard(exc: psycopg.Error) -> SummariesError:
    primary = exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag else None
    return SummariesError(f"summaries: {primary or exc} (is the database migrated? `insights db migrate`)")


@app.command()
def sweep(
    ctx: typer.Context,
    every: float | None = typer.Option(None, "--every", min=1.0, help="repeat every N seconds (a long-running service)"),
    chunk: int = typer.Option(1000, "--chunk", min=1, help="summaries recomputed per transaction"),
    tombstone_days: float = typer.Option(8.0, "--tombstone-days", min=7.0,
                                         help="purge delete markers older than this (above the CDC topics' 7-day retention)"),
    snapshot_months: int = typer.Option(12, "--snapshot-retention-months", min=0,
                                        help="forget snapshots the source's partition prune drops (0 = keep all)"),
    alert_months: int = typer.Option(6, "--alert-retention-months", min=0,
                                     help="forget alerts the source's partition prune drops (0 = keep all)"),
    metrics_port: int | None = metrics_port_option(),
    stuck_after: float = stuck_after_option(),
    unreachable_after: float = unreachable_after_option(),
) -> None:
    """Recompute the summaries whose 30-day price window lost a price since they were computed.

    Run it every minute (cron, a systemd timer, or --every 60): between runs a summary's
    min/max/avg may still count a price older than 30 days for at most that long. It also
    forgets rows the source's partition retention dropped (silent in the CDC stream) and
    purges old delete markers. With --every it is a service like `insights consume`:
    log lines, /metrics and /healthz (--metrics-port), SIGTERM stops it between sweeps.
    """
    from consumers.summaries.run import sweep_forever, sweep_once  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    ttl = timedelta(days=tombstone_days)
    retention = {"product_snapshots": snapshot_months, "alerts": alert_months}
    try:
        if every is None:
            sweep_once(settings, console, chunk, ttl, retention)
            return
        frame = service(
            settings, "summaries-sweep", metrics_port=metrics_port, stuck_after=stuck_after,
            unreachable_after=unreachable_after, kafka=False,
        )
        with frame:
            sweep_forever(settings, every, chunk, ttl, retention,
                          stop=frame.stop, registry=frame.registry, health=frame.health)
    except psycopg.Error as exc:
        raise _guard(exc) from None


@app.command()
def status(ctx: typer.Context) -> None:
    """How many summaries there are, how fresh, and how many wait for the sweep."""
    settings = settings_of(ctx)
    try:
        # read-only: a replica answers when INSIGHTS_PG_READ_DSN names one
        with connect(settings.pg, "summaries-status", read_only=True) as conn:
            row = conn.execute(
                """
                SELECT count(*), count(*) FILTER (WHERE is_active),
                       count(*) FILTER (WHERE window_expires_at <= now()),
                       max(computed_at), (SELECT count(*) FROM summaries.snapshots WHERE deleted)
                         + (SELECT count(*) FROM summaries.alerts WHERE deleted)
                         + (SELECT count(*) FROM summaries.products WHERE deleted)
                FROM summaries.product_summary
                """
            ).fetchone()
    except psycopg.Error as exc:
        raise _guard(exc) from None
    assert row is not None
    table = Table(title="summaries.product_summary", show_header=False)
    for label, value in zip(
        ("summaries", "active products", "windows waiting for the sweep", "last computed", "tombstones"),
        row, strict=True,
    ):
        table.add_row(label, str(value))
    console.print(table)


#: what the rebuild reports as it goes (its step callback), for the progress display
_REBUILD_STEPS = 9


@app.command()
def rebuild(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="build and verify the shadow copy, then drop it: nothing replaced"),
) -> None:
    """Recompute every summary from the source tables and swap them in, the live pipeline running.

    A consistent snapshot at a known WAL position L (a temporary slot), a shadow copy computed
    from it and verified against product_summary_view's query in the same snapshot, then,
    in one transaction holding the live tables, the changes the live sink applied after L and
    the swap (docs/summaries.md#rebuild). Repairs what the stream cannot: unchanged TOAST
    with no earlier value, a partition truncated or dropped without a trace, a corrupted row.
    """
    from consumers.summaries.rebuild import rebuild as run_rebuild  # lazy: CLI start-up of the other commands
    from insights.cli.confirm import confirm
    from insights.cli.context import err_console
    from insights.cli.progress import reporting

    settings = settings_of(ctx)
    if not dry_run:
        err_console.print(
            "will recompute every table of the summaries schema from the source tables and replace them "
            "(the live summaries consumer waits for the swap, then continues)", highlight=False,
        )
        confirm("Rebuild?", yes=yes, refused="nothing rebuilt")
    try:
        with reporting("summaries rebuild", "steps") as progress:
            done = 0

            def step(what: str) -> None:
                nonlocal done
                done += 1
                progress.update("rebuild", done, _REBUILD_STEPS, note=what)

            result = run_rebuild(settings, dry_run=dry_run, step=step)
            progress.finish("rebuild")
    except psycopg.Error as exc:
        raise _guard(exc) from None
    table = Table(title="summaries rebuild" + (" (dry run: nothing replaced)" if dry_run else ""), show_header=False)
    table.add_row("consistent point", result.consistent_point)
    for name, count in result.state_rows.items():
        table.add_row(f"summaries.{name} rows from the snapshot", f"{count:,}")
    table.add_row("summaries computed", f"{result.summaries:,}")
    table.add_row("price_daily days", f"{result.price_days:,}")
    if not dry_run:
        for name, count in result.caught_up.items():
            table.add_row(f"summaries.{name} changes after the point merged", f"{count:,}")
        table.add_row("summaries recomputed at the swap", f"{result.recomputed_at_swap:,}")
        table.add_row("swap attempts", str(result.swap_attempts))
    console.print(table)
