"""``insights db``: migrations, partitions, maintenance and statistics of the PostgreSQL database."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import typer
from rich.table import Table

from insights.cli.confirm import confirm
from insights.cli.context import console, err_console, settings_of
from insights.cli.progress import reporting
from insights.db import audit, grants, maintenance, migrations, partitions, roles, stats
from insights.db.errors import DatabaseError
from streams.pg import connect

app = typer.Typer(help="Migrate, partition, maintain and inspect the PostgreSQL database.", no_args_is_help=True)
partitions_app = typer.Typer(
    help="Partitions by time: create ahead, split the DEFAULT partition, prune by retention.",
    no_args_is_help=True,
)
app.add_typer(partitions_app, name="partitions")


@contextmanager
def _connect(ctx: typer.Context, *, read_only: bool = False) -> Iterator[psycopg.Connection]:
    pg = settings_of(ctx).pg
    try:
        conn = connect(pg, "db", read_only=read_only)
    except psycopg.Error as exc:
        text = str(exc).strip()
        raise DatabaseError(f"cannot connect to PostgreSQL: {text.splitlines()[0] if text else exc}") from exc
    with conn:
        yield conn


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value in (datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)):
        return "infinity"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


@app.command()
def migrate(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, change nothing"),
) -> None:
    """Apply the pending ddl/ migrations in order, each in a transaction, then create partitions."""
    settings = settings_of(ctx)
    with console.status("migrating…"):
        names = migrations.migrate(settings.pg.conninfo(), dry_run=dry_run)
    verb = "would apply" if dry_run else "applied"
    if not names:
        console.print("up to date: nothing to apply")
    for name in names:
        console.print(f"{verb} {name}")


@partitions_app.command("ensure")
def partitions_ensure(
    ctx: typer.Context,
    months_ahead: int | None = typer.Option(None, min=0, help="monthly tables: months ahead (policy: 3)"),
    days_ahead: int | None = typer.Option(None, min=0, help="daily tables: days ahead (policy: 14)"),
) -> None:
    """Move rows out of the DEFAULT partitions into their own, and create partitions ahead."""
    with _connect(ctx) as conn, reporting("db partitions", "steps") as progress:
        created = partitions.ensure(
            conn, months_ahead=months_ahead, days_ahead=days_ahead,
            on_progress=lambda done, total, what: progress.update("ensure", done, total, note=what),
        )
        progress.finish("ensure")
    for name in created:
        console.print(f"created {name}")
    console.print(f"{len(created)} partition(s) created")


def _rows(items: list[partitions.Pruned]) -> str:
    return f"~{sum(p.rows_estimate for p in items):,} rows"


def _line(item: partitions.Pruned) -> str:
    return f"{item.partition} [{_when(item.lower)} .. {_when(item.upper)}) ~{item.rows_estimate:,} rows"


def _show_prunable(items: list[partitions.Pruned], heading: str) -> None:
    # the listing is what the question is about, so it goes where the prompt goes; lines,
    # not a table: partition names must stay whole at 80 columns and when piped
    err_console.print(heading, highlight=False, soft_wrap=True)
    for item in items:
        err_console.print(f"  {_line(item)}", highlight=False, soft_wrap=True)


@partitions_app.command("prune")
def partitions_prune(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be dropped, drop nothing"),
    yes: bool = typer.Option(False, "--yes", "-y", help="drop without asking (required when not interactive)"),
    archive: Path | None = typer.Option(
        None, "--archive", help="first export each partition's rows to this archive directory "
        "(Avro container files and a manifest; `insights archive restore` loads them back); "
        "default: INSIGHTS_PG_RETENTION_ARCHIVE_DIR"
    ),
) -> None:
    """Detach and drop the partitions wholly older than their table's retention (by bounds).

    Shows what it will drop and asks; without a terminal it needs --yes. With --archive (or
    INSIGHTS_PG_RETENTION_ARCHIVE_DIR), each partition's rows are written and fsynced to the
    archive before it is dropped. Every run is recorded in retention_runs (`insights status`).
    """
    from insights.db import retention

    at = datetime.now(UTC)
    directory = archive or settings_of(ctx).pg.retention_archive_dir
    with _connect(ctx) as conn:
        planned = partitions.prunable(conn, now=at)
        if dry_run:
            if not planned:
                console.print("0 partition(s) past their retention: nothing to drop")
                return
            for item in planned:
                console.print(f"would drop {_line(item)}", highlight=False, soft_wrap=True)
            console.print(f"{len(planned)} partition(s) would be dropped ({_rows(planned)})")
            return
        if planned:
            _show_prunable(planned, "past their table's retention (see `insights db partitions policy`):")
            confirm(
                f"Drop these {len(planned)} partition(s) and their {_rows(planned)}"
                + (f", archived first to {directory}?" if directory else " (no archive)?"),
                yes=yes,
                refused="no partition dropped",
            )

        def archived(entry) -> None:  # type: ignore[no-untyped-def]
            assert directory is not None
            console.print(f"archived {entry.count:,} row(s) of {entry.partition} to {directory / entry.file}",
                          highlight=False, soft_wrap=True)

        with reporting("db partitions", "partitions") as progress:
            # a run with nothing due is recorded too: status sees the timer is alive
            done = retention.run(
                conn, runner="prune", archive_dir=directory, now=at, only={p.partition for p in planned},
                on_progress=lambda n, total, name: progress.update("prune", n, total, note=name),
                on_archived=archived,
            )
            progress.finish("prune")
    if not planned:
        console.print("0 partition(s) past their retention: nothing to drop")
        return
    for item in done.dropped:
        console.print(f"dropped {item.partition} [{_when(item.lower)} .. {_when(item.upper)})", highlight=False, soft_wrap=True)
    console.print(f"{len(done.dropped)} partition(s) dropped"
                  + (f", {done.rows_archived:,} row(s) archived to {directory}" if directory else ""),
                  highlight=False, soft_wrap=True)


def _policy_table(policies: list[partitions.Policy], due: dict[str, list[partitions.Pruned]]) -> Table:
    table = Table(title="partition policy (ddl/0013: partition_policy)")
    # table names must stay whole at 80 columns: two cut to "product_snap…" look alike
    table.add_column("table", no_wrap=True)
    table.add_column("period")
    table.add_column("ahead")
    table.add_column("retention")
    table.add_column("past retention now")
    for policy in policies:
        items = due.get(policy.parent, [])
        table.add_row(
            policy.parent,
            policy.period,
            str(policy.premake),
            policy.retention or "forever",
            f"{len(items)} partition(s), {_rows(items)}" if items else "-",
        )
    return table


def _by_parent(items: list[partitions.Pruned]) -> dict[str, list[partitions.Pruned]]:
    grouped: dict[str, list[partitions.Pruned]] = {}
    for item in items:
        grouped.setdefault(item.parent, []).append(item)
    return grouped


@partitions_app.command("policy")
def partitions_policy(
    ctx: typer.Context,
    table: str | None = typer.Option(None, "--table", "-t", help="the partitioned table to change"),
    retention: str | None = typer.Option(
        None, "--retention",
        help="how long partitions are kept, as a PostgreSQL interval ('12 months', '90 days'), or 'none'",
    ),
    premake: int | None = typer.Option(None, "--premake", min=0, max=400, help="periods created ahead"),
    yes: bool = typer.Option(False, "--yes", "-y", help="change without asking (required when not interactive)"),
) -> None:
    """Show the partition policy of every table, or change one table's retention or premake.

    The policy lives in the partition_policy table (ddl/0013); `db partitions prune` and
    `db maintain` drop what is past it. A retention that makes partitions prunable shows
    them and asks first (without a terminal: --yes).
    """
    if table is None and (retention is not None or premake is not None):
        raise typer.BadParameter("say which table to change", param_hint="--table")
    with _connect(ctx) as conn:
        known = {p.parent: p for p in partitions.policies(conn)}
        if table is None:
            console.print(_policy_table(list(known.values()), _by_parent(partitions.prunable(conn))))
            return
        if table not in known:
            raise typer.BadParameter(
                f"{table!r} has no partition policy; one of: {', '.join(sorted(known))}", param_hint="--table"
            )
        if retention is None and premake is None:
            console.print(_policy_table([known[table]], _by_parent(partitions.prunable(conn))))
            return
        new_retention = known[table].retention
        if retention is not None:
            new_retention = partitions.parse_retention(conn, retention)
            now_due = {p.partition for p in partitions.prunable(conn)}
            then_due = partitions.prunable(conn, table=table, retention=new_retention)
            newly = [p for p in then_due if p.partition not in now_due]
            if newly:
                _show_prunable(newly, f"past a retention of {new_retention}, dropped by the next prune or maintain:")
                confirm(
                    f"Set the retention of {table} to {new_retention}? The next prune drops these "
                    f"{len(newly)} partition(s) and their {_rows(newly)}",
                    yes=yes,
                    refused="policy unchanged",
                )
        changed = partitions.set_policy(
            conn, table,
            retention=new_retention if retention is not None else None,
            keep_forever=retention is not None and new_retention is None,
            premake=premake,
        )
    before = known[table]
    if retention is not None:
        console.print(
            f"{table}: retention {before.retention or 'forever'} -> {changed.retention or 'forever'}", highlight=False
        )
    if premake is not None:
        console.print(
            f"{table}: {changed.period}s created ahead {before.premake} -> {changed.premake}", highlight=False
        )
    if table in ("product_snapshots", "alerts") and retention is not None:
        # the summaries forget what the prune drops by their own setting, not this table
        console.print(
            "note: `insights summaries sweep` forgets pruned rows by its --snapshot-retention-months / "
            "--alert-retention-months; keep them in step",
            highlight=False,
            soft_wrap=True,
        )


@partitions_app.command("status")
def partitions_status(ctx: typer.Context) -> None:
    """List the partitions of every managed table with bounds and rows; DEFAULT rows are counted."""
    with _connect(ctx) as conn:
        infos = partitions.status(conn)
    table = Table("table", "partition", "from (UTC)", "to (UTC)", "rows")
    for info in infos:
        rows = f"{info.rows_estimate} (exact)" if info.is_default else f"~{info.rows_estimate}"
        table.add_row(
            info.parent,
            info.partition + (" [default]" if info.is_default else ""),
            _when(info.lower),
            _when(info.upper),
            rows,
        )
    console.print(table)


@app.command()
def maintain(
    ctx: typer.Context,
    archive: Path | None = typer.Option(
        None, "--archive", file_okay=False,
        help="archive each partition the prune step drops into this directory first "
        "(default: INSIGHTS_PG_RETENTION_ARCHIVE_DIR; neither: dropped without an archive)",
    ),
) -> None:
    """Partitions, prune, refresh the summary view concurrently, vacuum, analyze: safe while consumers write."""
    settings = settings_of(ctx)
    archive_dir = archive if archive is not None else settings.pg.retention_archive_dir
    steps = len(maintenance.STEPS)
    with reporting("db maintain", "steps") as progress:
        done: list[str] = []

        def step(name: str) -> None:
            progress.update("maintain", len(done), steps, note=name)
            done.append(name)

        results = maintenance.maintain(settings.pg.conninfo(), on_step=step,
                                       archive_dir=archive_dir)
        progress.update("maintain", steps, steps, note="done")
        progress.finish("maintain")
    table = Table("step", "seconds", "result")
    for result in results:
        table.add_row(result.name, f"{result.seconds:.2f}", result.detail)
    console.print(table)


@app.command("stats")
def stats_cmd(
    ctx: typer.Context,
    primary: bool = typer.Option(False, "--primary", help="ask the primary, not INSIGHTS_PG_READ_DSN"),
) -> None:
    """Connection usage, table sizes and index usage, as tables (from a replica when one answers)."""
    with _connect(ctx, read_only=not primary) as conn:
        where = conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone()
        reports = stats.reports(conn)
    if where is not None:
        # connection counts and index usage are per server: say which one answered
        role = "replica" if where[0] else "primary"
        console.print(f"from the {role} on port {where[1]}", highlight=False)
    for report in reports:
        table = Table(*report.columns, title=report.title)
        for row in report.rows:
            table.add_row(*("-" if value is None else str(value) for value in row))
        console.print(table)


def _since(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T06:00 or 2026-12-01)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@app.command("audit")
def audit_cmd(
    ctx: typer.Context,
    since: str = typer.Option(..., "--since", help="ISO 8601 time (UTC unless it says otherwise)"),
    log: Path | None = typer.Option(None, "--log", help="server log (default: the stack's pg/server.log)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per entry"),
) -> None:
    """The pgaudit entries (DDL, GRANT/ROLE, admin writes) of the server log since a time."""
    when = _since(since)
    path = log or settings_of(ctx).stack.dir / "pg" / "server.log"
    entries = audit.read(path, when)
    if as_json:
        for entry in entries:
            console.print_json(json.dumps(entry.as_json()))
        return
    table = Table("at (UTC)", "user@db", "class", "command", "object", "statement")
    for e in entries:
        table.add_row(e.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), f"{e.user}@{e.database}", e.audit_class,
                      e.command, e.object_name or "-", e.statement[:200])
    console.print(table)
    console.print(f"{len(entries)} audit entries since {when.isoformat()} in {path}", highlight=False, soft_wrap=True)


@app.command("grants")
def grants_cmd(ctx: typer.Context) -> None:
    """Compare every role's grants with the table in ddl/README.md; exit 1 listing each difference."""
    with _connect(ctx, read_only=True) as conn:
        found = grants.check(conn)
    if not found:
        console.print("grants match ddl/README.md")
        return
    for line in found:
        err_console.print(line, highlight=False)
    err_console.print(f"{len(found)} difference(s) from ddl/README.md: revoke them, or change the table and a migration")
    raise typer.Exit(1)


@app.command()
def passwords(
    ctx: typer.Context,
    generate: bool = typer.Option(
        False, "--generate", help="give each service role without a password in the settings a random one, "
        "kept in the libpq password file (--passfile, else the DSN's passfile=, else PGPASSFILE)",
    ),
    passfile_path: Path | None = typer.Option(
        None, "--passfile", help="with --generate: the libpq password file to keep the passwords in (0600)"
    ),
    rotate: bool = typer.Option(False, "--rotate", help="with --generate: new passwords even where the file has one"),
) -> None:
    """Set the service roles' login passwords: from INSIGHTS_PG_INGEST_PASSWORD /
    INSIGHTS_PG_CDC_PASSWORD, or generated into a password file (--generate). Passwords are
    never printed; only their SCRAM verifiers reach the server."""
    from psycopg.conninfo import conninfo_to_dict

    from insights.db import passfile
    from insights.stack import tls as stack_tls

    settings = settings_of(ctx)
    wanted = {"insights_ingest": settings.pg.ingest_password, "insights_cdc": settings.pg.cdc_password}
    if (passfile_path or rotate) and not generate:
        raise typer.BadParameter("--passfile and --rotate go with --generate", param_hint="--generate")
    target: Path | None = None
    parts: dict[str, object] = {}
    if generate:
        parts = conninfo_to_dict(settings.pg.conninfo())
        found = passfile_path or parts.get("passfile") or os.environ.get("PGPASSFILE")
        if not found:
            raise typer.BadParameter(
                "say where the passwords go: --passfile PATH (or passfile= in INSIGHTS_PG_DSN, or PGPASSFILE)",
                param_hint="--passfile",
            )
        target = Path(str(found)).expanduser()
    with _connect(ctx) as conn:
        done = roles.set_passwords(conn, wanted)
        stored: list[roles.Stored] = []
        if target is not None:
            # the file is looked up by the host the services' DSNs name: a loopback server
            # is written under both spellings of it
            host = str(parts.get("host") or "localhost").split(",")[0]
            hosts = passfile.LOOPBACK if host in passfile.LOOPBACK or host.startswith("/") else (host,)
            port = str(parts.get("port") or "5432").split(",")[0]
            if target.resolve() == stack_tls.stack_passfile(settings.stack.dir).resolve():
                # the local stack's file serves all its servers (replicas, a promoted one,
                # PgBouncer) on their own ports: the same roles everywhere (insights/stack/tls.py)
                port = stack_tls.ANY_PORT
            left = [r for r in roles.SERVICE_ROLES if wanted[r] is None]
            stored = roles.generate_into(conn, target, hosts, port, roles=left, rotate=rotate)
    if not done and not stored:
        console.print("no password in the settings and no --generate: nothing changed")
    for role in done:
        console.print(f"password set for {role} (from the settings)")
    for item in stored:
        how = "generated" if item.generated else "kept"
        console.print(f"password set for {item.role} ({how}, in {target})", highlight=False, soft_wrap=True)


@app.command()
def schedule(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="list the jobs, install nothing"),
    at: list[str] = typer.Option(
        None, "--at", help="override one job's cron schedule, NAME=SCHEDULE (repeatable), e.g. "
        "insights-partitions='* * * * *'",
    ),
    systemd: Path | None = typer.Option(
        None, "--systemd", help="write systemd service+timer units into this directory instead (no pg_cron)"
    ),
) -> None:
    """Install the maintenance jobs in pg_cron (docs/runbooks.md#scheduled-maintenance)."""
    import shutil

    from insights.ops import schedule as jobs

    if systemd is not None:
        with _connect(ctx) as conn:
            with_cron = jobs.cron_state(conn).loaded
        units = jobs.systemd_units(shutil.which("insights") or "/usr/local/bin/insights", with_cron=with_cron,
                                   archive_dir=settings_of(ctx).pg.retention_archive_dir)
        systemd.mkdir(parents=True, exist_ok=True)
        for name, text in units.items():
            (systemd / name).write_text(text, encoding="utf-8")
            console.print(f"wrote {systemd / name}", highlight=False)
        console.print("enable with: systemctl enable --now " + " ".join(n for n in units if n.endswith(".timer")))
        return
    overrides: dict[str, str] = {}
    for item in at or []:
        name, sep, spec = item.partition("=")
        if not sep or not spec.strip():
            raise jobs.ScheduleError(f"--at {item!r}: expected NAME=SCHEDULE, e.g. insights-partitions='* * * * *'")
        overrides[name.strip()] = spec.strip()
    archive_dir = settings_of(ctx).pg.retention_archive_dir
    with _connect(ctx) as conn:
        done = jobs.install(conn, overrides, dry_run=dry_run, archive_dir=archive_dir)
    table = Table("job", "schedule", "command", title="pg_cron jobs" + (" (dry run)" if dry_run else ""))
    for job, what in done:
        first = job.command.splitlines()[0]
        table.add_row(job.name, what, first + (" …" if "\n" in job.command else ""))
    console.print(table)
    outside = [cmd for _n, _c, cmd in jobs.OUTSIDE_JOBS]
    if archive_dir is not None:
        # the SQL job cannot write the Avro archive: the timer's prune archives, then drops
        console.print(
            f"{jobs.RETENTION}: not in pg_cron (INSIGHTS_PG_RETENTION_ARCHIVE_DIR={archive_dir}): "
            f"the systemd timer runs `{jobs.retention_command(archive_dir)}` daily at 02:23; every run is "
            "recorded in retention_runs and shown by `insights status`", highlight=False, soft_wrap=True)
        outside.append(jobs.retention_command(archive_dir))
    console.print(f"not in pg_cron (Python or pgBackRest): {', '.join(outside)}; "
                  "write their timers with `insights db schedule --systemd DIR`", highlight=False, soft_wrap=True)
