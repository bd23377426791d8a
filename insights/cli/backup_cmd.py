"""``insights backup full|diff|incr|info|check|restore``: pgBackRest backups and point-in-time recovery."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from insights.cli.context import console, err_console, settings_of

app = typer.Typer(
    help="Backups and point-in-time recovery with pgBackRest (docs/runbooks.md#backups).", no_args_is_help=True
)


def _backup(ctx: typer.Context, kind: str) -> None:
    from insights.ops.backup import PgBackRest, backups_of

    tool = PgBackRest(settings_of(ctx))
    with console.status(f"pgbackrest backup --type={kind} (stanza {tool.stanza})…"):
        tool.backup(kind)
    newest = backups_of(tool.info())[-1]
    console.print(
        f"{newest.kind} backup {newest.label} done in {(newest.stopped - newest.started).total_seconds():.0f} s, "
        f"WAL {newest.wal_start}..{newest.wal_stop}",
        highlight=False,
    )


@app.command()
def full(ctx: typer.Context) -> None:
    """A full backup (the base every restore starts from; weekly)."""
    _backup(ctx, "full")


@app.command()
def diff(ctx: typer.Context) -> None:
    """A differential backup: what changed since the last full one (daily)."""
    _backup(ctx, "diff")


@app.command()
def incr(ctx: typer.Context) -> None:
    """An incremental backup: what changed since the last backup of any type (every 4 hours)."""
    _backup(ctx, "incr")


@app.command()
def info(ctx: typer.Context) -> None:
    """The backups in the repository, the WAL archive range, the newest backup's age."""
    from insights.ops.backup import PgBackRest, backups_of

    tool = PgBackRest(settings_of(ctx))
    data = tool.info()
    found = backups_of(data)
    table = Table("label", "type", "started (UTC)", "took", "size", "WAL start", "WAL stop",
                  title=f"stanza {tool.stanza} ({(data.get('status') or {}).get('message', '?')})")
    for item in found:
        table.add_row(
            item.label, item.kind, f"{item.started:%Y-%m-%d %H:%M:%S}",
            f"{(item.stopped - item.started).total_seconds():.0f} s",
            "-" if item.size is None else f"{item.size / 1024 / 1024:.1f} MB",
            item.wal_start or "-", item.wal_stop or "-",
        )
    console.print(table)
    # the chain, one line per backup (labels whole at any width, unlike in the table): a diff
    # is based on its full, an incr on the backup before it; a restore reads every reference
    for item in found:
        if item.prior:
            console.print(f"{item.kind} {item.label} based on {item.prior}; a restore of it reads "
                          f"{' + '.join(item.reference)}", highlight=False, soft_wrap=True)
    for archive in data.get("archive", []):
        console.print(f"WAL archive {archive.get('id')}: {archive.get('min')} .. {archive.get('max')}", highlight=False)
    if found:
        age = (datetime.now(UTC) - found[-1].stopped).total_seconds() / 3600
        console.print(f"newest backup {age:.1f} h old", highlight=False)


@app.command()
def check(ctx: typer.Context) -> None:
    """Archiving works end to end (a WAL switch reaches the repository) and the newest backup is recent."""
    from insights.ops.backup import PgBackRest
    from insights.ops.health import backups

    settings = settings_of(ctx)
    with console.status("pgbackrest check (switches WAL and waits for it in the repository)…"):
        PgBackRest(settings).check()
    console.print("archive: a fresh WAL segment reached the repository")
    rows = backups(settings)
    for row in rows:
        console.print(f"{row.what}: {row.state} {row.detail}", highlight=False, style=None if row.healthy else "bold red")
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


@app.command()
def restore(
    ctx: typer.Context,
    to_time: str = typer.Option(..., "--to-time", help="recovery target, ISO 8601 with a time zone"),
    into: Path = typer.Option(..., "--into", help="directory for the restored cluster (gets data/, run/, server.log)"),
    port: int = typer.Option(..., "--port", min=1024, max=65535, help="loopback port of the restored cluster"),
    yes: bool = typer.Option(False, "--yes", help="overwrite a non-empty directory without asking"),
) -> None:
    """Restore to a point in time beside the running cluster, start it, report what it holds."""
    from insights.ops.backup import restore as run_restore

    settings = settings_of(ctx)
    into = into.resolve()
    data = into / "data"
    if data.exists() and any(data.iterdir()):
        err_console.print(f"{data} is not empty: pgBackRest will overwrite it (delta restore)", highlight=False)
        from insights.cli.confirm import confirm

        confirm("Overwrite it?", yes=yes, refused="nothing restored")
    with console.status("restoring…") as status:
        report = run_restore(settings, to_time=to_time, into=into, port=port,
                             progress=lambda m: status.update(f"{m}…"))
    console.print(f"restored to {report.target} in {report.root}, running on port {report.port}", highlight=False)
    if report.last_commit is not None:
        console.print(f"newest commit it holds: {report.last_commit.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f} UTC",
                      highlight=False)
    table = Table("table", "rows", title="what the restored cluster holds")
    for name, rows in report.tables.items():
        table.add_row(name, str(rows))
    console.print(table)
    for group, topic, total in report.offsets:
        console.print(f"consumer group {group} / {topic}: sum of next offsets {total}", highlight=False)
    console.print(f"connect: {report.dsn}", highlight=False, soft_wrap=True)
    console.print(f"stop it: {report.stop_command}", highlight=False)
