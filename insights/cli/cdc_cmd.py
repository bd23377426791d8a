"""`insights cdc`: stream committed changes of the published tables to Kafka."""

from __future__ import annotations

import json
import logging
from typing import Any

import typer
from rich.table import Table

from insights.cli.confirm import confirm
from insights.cli.context import console, err_console, settings_of
from insights.cli.service_opts import metrics_port_option, service, unreachable_after_option
from insights.cli.progress import reporting
from core.settings import Settings
from streams.cdc import slot as slots
from streams.cdc.errors import CdcError
from streams.cdc.lsn import format_lsn
from streams.topics import cdc_tables

log = logging.getLogger("insights.cdc")

app = typer.Typer(help="CDC reader: logical replication (pgoutput) -> Avro change events on Kafka.", no_args_is_help=True)


def _tables(settings: Settings, tables: list[str] | None) -> Settings:
    if tables:
        return settings.replace(cdc_tables=list(tables))
    return settings


@app.command()
def setup(
    ctx: typer.Context,
    table: list[str] = typer.Option(None, "--table", "-t", help="table to publish (repeatable); default: cdc_tables"),
) -> None:
    """Create the publication (publish_via_partition_root) and the pgoutput slot if missing, and the topics."""
    from streams.cdc.reader import CdcReader  # lazy: CLI start-up of the other commands

    settings = _tables(settings_of(ctx), table)
    CdcReader(settings).setup()
    console.print(
        f"publication {settings.cdc.publication} and slot {settings.cdc.slot_name} ready for "
        f"{', '.join(cdc_tables(settings))}"
    )


@app.command()
def drop(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
) -> None:
    """Drop the slot and the publication (WAL they pinned is released; positions are forgotten)."""
    settings = settings_of(ctx)
    err_console.print(
        f"will drop slot {settings.cdc.slot_name!r} and publication {settings.cdc.publication!r}: the reader's "
        "position is lost; a new slot needs `insights cdc snapshot` to rebuild consumers",
        highlight=False,
    )
    confirm("Drop them?", yes=yes, refused="nothing dropped")
    with slots.connect(settings.pg) as conn:
        done = slots.drop(conn, settings.cdc.slot_name, settings.cdc.publication)
    console.print("dropped " + ", ".join(done) if done else "nothing to drop")


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    reader: str | None = typer.Option(
        None, "--reader", metavar="URL",
        help="the reader's metrics endpoint (default http://127.0.0.1:<INSIGHTS_METRICS_PORT>/metrics)",
    ),
) -> None:
    """Show the slot (confirmed_flush_lsn, restart_lsn, lag in bytes and seconds, wal_status, safe_wal_size)
    and the reader's own view from its metrics endpoint (connected, positions, lag, last event time)."""
    from streams.cdc.metrics import read_view  # lazy: CLI start-up of the other commands

    settings = settings_of(ctx)
    with slots.connect(settings.pg) as conn:
        found = slots.slot_status(conn, settings.cdc.slot_name)
    if found is None:
        raise CdcError(f"no replication slot {settings.cdc.slot_name!r} (run `insights cdc setup`)")
    url = reader or f"http://127.0.0.1:{settings.service.metrics_port}/metrics"
    view: dict[str, object]
    try:
        seen = read_view(url, settings.cdc.slot_name)
        view = {**seen.as_dict(), "answering": True}
        for name in ("received_lsn", "confirmed_lsn"):
            value = view[name]
            view[name] = format_lsn(value) if isinstance(value, int) else value
        for name in ("last_event_commit_time", "last_event_delivered"):
            value = view[name]
            view[name] = _iso(value) if isinstance(value, float) else value
    except (OSError, LookupError, ValueError) as exc:
        view = {"url": url, "answering": False, "why": " ".join(str(exc).split())}
    if as_json:
        console.print_json(json.dumps({**found.as_dict(), "reader": view}))
    else:
        table = Table(title=f"slot {found.slot}")
        table.add_column("field")
        table.add_column("value")
        for name, value in found.as_dict().items():
            table.add_row(name, "" if value is None else str(value))
        console.print(table)
        mine = Table(title="reader (its /metrics)")
        mine.add_column("field")
        mine.add_column("value")
        for name, value in view.items():
            mine.add_row(name, "" if value is None else str(value))
        console.print(mine)
    if found.wal_status == "lost":
        raise CdcError(f"slot {found.slot!r} is lost: see docs/cdc.md#lost-slot-recovery")


@app.command()
def run(
    ctx: typer.Context,
    table: list[str] = typer.Option(None, "--table", "-t", help="table to publish (repeatable); default: cdc_tables"),
    metrics_port: int | None = metrics_port_option(),
    unreachable_after: float = unreachable_after_option(),
) -> None:
    """Stream changes until SIGTERM/SIGINT; a second process waits as hot standby for the slot.

    /metrics and /healthz on --metrics-port (taken: the next free one), JSON logs with INSIGHTS_LOG_JSON.
    """
    from streams.cdc.reader import CdcReader  # lazy: CLI start-up of the other commands

    settings = _tables(settings_of(ctx), table)
    # the reader does not beat a liveness clock: its health is the dependencies'
    frame = service(settings, "cdc-run", metrics_port=metrics_port, stuck_after=None, unreachable_after=unreachable_after)
    with frame:
        reader = CdcReader(settings, registry=frame.registry, health=frame.health, stop=frame.stop)
        log.info(
            "streaming slot %s (publication %s)", settings.cdc.slot_name, settings.cdc.publication,
            extra={"slot": settings.cdc.slot_name, "publication": settings.cdc.publication},
        )
        confirmed = reader.run(standby_notice=_StandbyNotice())
    log.info("stopped; confirmed %s", format_lsn(confirmed), extra={"confirmed_lsn": format_lsn(confirmed)})


def _iso(unix_s: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(unix_s, timezone.utc).isoformat(timespec="milliseconds")


class _StandbyNotice:
    """Hot standby retries every few seconds: say so once, then only at debug level."""

    def __init__(self) -> None:
        self.told = False

    def __call__(self, why: str) -> None:
        level = logging.DEBUG if self.told else logging.INFO
        log.log(level, "hot standby: slot busy, retrying", extra={"reason": why})
        self.told = True


@app.command()
def snapshot(
    ctx: typer.Context,
    tables_arg: list[str] = typer.Argument(None, metavar="TABLE", help="tables to snapshot (same as -t)"),
    table: list[str] = typer.Option(None, "--table", "-t", help="table to snapshot (repeatable); default: cdc_tables"),
    recreate_slot: bool = typer.Option(
        False, "--recreate-slot", help="drop an existing slot first (the reader must be stopped)"
    ),
    incremental: bool = typer.Option(
        False, "--incremental",
        help="ask the running reader for an incremental snapshot (chunks between watermarks, while it streams; "
        "resumable); shows its progress",
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="--incremental: follow the progress until done"),
    status: int | None = typer.Option(
        None, "--status", metavar="SIGNAL", min=1,
        help="follow an incremental snapshot already requested (the number `--incremental` or `cdc resync "
        "--incremental` printed) until it is done",
    ),
) -> None:
    """Emit the current rows as read events (op r).

    Without --incremental: from the snapshot the slot's creation exports (an empty slot).
    With --incremental: the running `insights cdc run` reads the tables in primary-key chunks
    interleaved with the live stream (DBLog watermarks); the request goes through the signal
    table, the progress is kept in PostgreSQL, and a restarted reader continues it.
    """
    settings = settings_of(ctx)
    chosen = [*(tables_arg or []), *(table or [])]
    tables = tuple(chosen) if chosen else cdc_tables(settings)
    if status is not None:
        if incremental or chosen:
            raise typer.BadParameter("--status follows a request already made: no tables, no --incremental")
        with slots.connect(settings.pg, "cdc-snapshot") as conn:
            _follow(conn, settings, status)
        return
    if incremental:
        _incremental_snapshot(settings, list(tables), wait)
        return
    if not wait:
        raise typer.BadParameter("--no-wait goes with --incremental")
    from streams.cdc.snapshot import run_snapshot  # lazy: CLI start-up of the other commands

    with reporting("cdc snapshot", "rows") as progress:
        current: list[str] = []

        def show(name: str, done: int, estimate: int | None) -> None:
            if current and current[0] != name:  # the previous table is complete
                progress.finish(current[0])
            current[:] = [name]
            progress.update(name, done, estimate)

        result = run_snapshot(settings, tables, recreate_slot=recreate_slot, on_progress=show)
        if current:
            progress.finish(current[0])
    console.print(
        f"snapshot at {result.consistent_point}: "
        + ", ".join(f"{t} {n} rows" for t, n in result.rows.items())
    )


def _incremental_snapshot(settings: Settings, tables: list[str], wait: bool) -> None:
    from streams.cdc import incremental as inc  # lazy: CLI start-up of the other commands

    schema, slot = settings.cdc.schema_name, settings.cdc.slot_name
    with slots.connect(settings.pg, "cdc-snapshot") as conn:
        signal = inc.request(conn, schema, slot, tables)
        console.print(f"incremental snapshot {signal} requested for {', '.join(tables)} (slot {slot})", highlight=False)
        if wait:
            _follow(conn, settings, signal)


def _follow(conn: Any, settings: Settings, signal: int) -> None:
    """Show an incremental snapshot's progress, table by table, until every table is done."""
    import time

    from streams.cdc import incremental as inc

    schema, slot = settings.cdc.schema_name, settings.cdc.slot_name
    finished: set[str] = set()
    warned = False
    started = time.monotonic()
    with reporting("cdc snapshot --incremental", "rows") as progress:
        while True:
            states = inc.progress(conn, schema, slot, signal)
            for state in states:
                if state.table in finished:
                    continue
                progress.update(f"{schema}.{state.table}", state.rows_done,
                                max(state.rows_estimate or 0, state.rows_done) or None)
                if state.status == "done":
                    progress.finish(f"{schema}.{state.table}")
                    finished.add(state.table)
            if len(finished) == len(states):
                break
            if not warned and not any(s.taken for s in states) and time.monotonic() - started > 10:
                err_console.print(
                    f"no reader took the request yet: is `insights cdc run` streaming slot {slot}? (waiting)",
                    highlight=False,
                )
                warned = True
            time.sleep(0.5)
    console.print(
        "incremental snapshot done: " + ", ".join(f"{s.table} {s.rows_done} rows" for s in states), highlight=False
    )


@app.command()
def resync(
    ctx: typer.Context,
    group: str | None = typer.Option(
        None, "--group", help="summaries consumer group to reset (default INSIGHTS_CONSUMER_GROUP + '.summaries')"
    ),
    incremental: bool = typer.Option(
        False, "--incremental",
        help="re-publish the rows through an incremental snapshot that `insights cdc run` carries out in chunks "
        "while it streams (no pause of the stream), instead of all at once before it starts",
    ),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation (needed when not interactive)"),
) -> None:
    """After a lost slot (failover, lost WAL): new slot, every row re-published, summaries rebuilt.

    Run it on the new primary with the reader stopped; then start `insights cdc run`.
    See docs/runbooks.md#primary-lost.
    """
    from insights.ops.resync import check_can_resync, resync as run_resync, summaries_group

    settings = settings_of(ctx)
    replaced = check_can_resync(settings)
    target = group or summaries_group(settings)
    err_console.print("cdc resync will:")
    for line in (
        replaced or f"create slot {settings.cdc.slot_name}",
        f"move the stored offsets of group {target} to the end of the CDC topics and empty the summaries tables",
        f"publish every current row of {', '.join(cdc_tables(settings))} as read events "
        + ("(an incremental snapshot, carried out by `insights cdc run`)" if incremental else "(snapshot)"),
    ):
        err_console.print(f"  - {line}", highlight=False)
    confirm("Resync?", yes=yes, refused="no resync")
    with err_console.status("resyncing…") as status:
        result = run_resync(settings, group=target, incremental=incremental, console=err_console,
                            progress=lambda m: status.update(f"{m}…"))
    ends = sum(sum(parts.values()) for parts in result.boundary.values())
    console.print(
        f"resync boundary: {ends} records in {len(result.boundary)} CDC topics; "
        f"summaries {'reset' if result.summaries_reset else 'schema absent, nothing reset'} for group {target}",
        highlight=False,
    )
    if result.signal is not None:
        console.print(
            f"incremental snapshot {result.signal} requested; next: start `insights cdc run` (it streams from the "
            f"new slot and reads the tables in chunks meanwhile; follow with `insights cdc snapshot --status "
            f"{result.signal}`)",
            highlight=False,
        )
        return
    console.print(
        f"snapshot at {result.consistent_point}: " + ", ".join(f"{t} {n} rows" for t, n in result.rows.items()),
        highlight=False,
    )
    console.print("next: start `insights cdc run` (streams from the new slot's consistent point)")
