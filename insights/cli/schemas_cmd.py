"""``insights schemas check | register | show | docs``: the Avro contracts of the event topics."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.syntax import Syntax
from rich.table import Table

from core.paths import REPO_ROOT, SCHEMAS_DIR
from insights.cli.context import console, err_console, settings_of
from core.errors import ConfigError
from streams.contracts.asyncapi import render_asyncapi
from streams.contracts.compatibility import SubjectReport, check_subject
from streams.contracts.registry import register_all
from streams.serde.registry import registry_client
from streams.serde.store import SchemaStore

app = typer.Typer(help="Check, register, show and document the Avro event schemas.", no_args_is_help=True)

DirOption = typer.Option(None, "--dir", help="schema directory (default: the repository's schemas/avro)")
DEFAULT_ASYNCAPI = REPO_ROOT / "schemas" / "asyncapi.yaml"


def _store(ctx: typer.Context, directory: Path | None) -> SchemaStore:
    # a fresh store, not the process-wide cache: the CLI reads what is on disk now
    return SchemaStore(directory or SCHEMAS_DIR)


def _matrix(report: SubjectReport) -> Table:
    table = Table(title=f"{report.subject} ({report.level})", show_lines=False)
    table.add_column("reader \\ writer")
    for v in report.versions:
        table.add_column(f"v{v}", justify="center")
    for reader in report.versions:
        cells = []
        for writer in report.versions:
            if reader == writer:
                cells.append("·")
                continue
            pair = report.pairs[(reader, writer)]
            required = (reader, writer) in report.required
            if pair.compatible:
                cells.append("[green]ok[/green]" if required else "[dim]ok[/dim]")
            else:
                cells.append("[red]BREAK[/red]" if required else "[dim]no (not required)[/dim]")
        table.add_row(f"v{reader}", *cells)
    return table


@app.command()
def check(
    ctx: typer.Context,
    subject: list[str] = typer.Option(None, "--subject", "-s", help="check only these subjects"),
    directory: Path | None = DirOption,
) -> None:
    """Check every subject's versions against its compatibility level (FULL_TRANSITIVE by
    default, set per subject in subject.json); print a reader x writer matrix and one
    sentence per break. Exit code 1 on any break."""
    store = _store(ctx, directory)
    names = subject or list(store.subjects)
    broken = 0
    for name in names:
        report = check_subject(store.subject(name))
        console.print(_matrix(report))
        for pair in report.breaks:
            for explanation in pair.explanations:
                broken += 1
                console.print(f"  [red]✗[/red] {name}: {explanation}", soft_wrap=True, highlight=False)
        if report.ok:
            console.print(f"  [green]✓[/green] {name}: {len(report.versions)} version(s) are {report.level} compatible")
    if broken:
        err_console.print(f"insights: {broken} compatibility break(s)")
        raise typer.Exit(1)


@app.command()
def register(
    ctx: typer.Context,
    url: str | None = typer.Option(None, "--url", help="registry URL (default: INSIGHTS_SCHEMA_REGISTRY_URL)"),
    directory: Path | None = DirOption,
) -> None:
    """Register every version of every event subject under <topic>-value, in order, after
    setting the subject's compatibility level on the registry."""
    settings = settings_of(ctx)
    target = url or settings.kafka.schema_registry_url
    if not target:
        raise ConfigError("no schema registry: set INSIGHTS_SCHEMA_REGISTRY_URL or pass --url")
    store = _store(ctx, directory)
    # --url wins over the setting everywhere, messages included
    settings = settings.replace(schema_registry_url=target)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True) as progress:
        task = progress.add_task("registering…")
        done = register_all(settings, store, registry_client(target), lambda text: progress.update(task, description=text))
    table = Table("registry subject", "local version", "schema id")
    for row in done:
        table.add_row(row.registry_subject, row.local, str(row.schema_id))
    console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    subject: str = typer.Argument(..., help="subject folder name, e.g. product_scraped"),
    version: int | None = typer.Option(None, "--version", "-v", help="version number (default: latest)"),
    directory: Path | None = DirOption,
) -> None:
    """Show a subject's versions with their fingerprints, and one version's schema."""
    found = _store(ctx, directory).subject(subject)
    chosen = found.latest if version is None else found.version(version)
    table = Table("version", "fields", "CRC-64-AVRO fingerprint", "file")
    for v in found.versions:
        marker = " *" if v is chosen else ""
        table.add_row(f"v{v.version}{marker}", str(len(v.raw.get("fields", []))), v.fingerprint.hex(), str(v.path))
    console.print(f"{found.name}: compatibility {found.compatibility}")
    console.print(table)
    console.print(Syntax(json.dumps(chosen.raw, indent=2), "json"))


@app.command()
def docs(
    ctx: typer.Context,
    output: Path = typer.Option(DEFAULT_ASYNCAPI, "--output", "-o", help="where to write the AsyncAPI document"),
    check_only: bool = typer.Option(False, "--check", help="write nothing; exit 1 if the file is stale"),
    directory: Path | None = DirOption,
) -> None:
    """Generate the AsyncAPI 3 document of the event topics from streams/topics.py and the schemas."""
    text = render_asyncapi(_store(ctx, directory), settings_of(ctx))
    current = output.read_text(encoding="utf-8") if output.exists() else None
    if check_only:
        if current != text:
            err_console.print(f"insights: {output} is stale: run `insights schemas docs`")
            raise typer.Exit(1)
        console.print(f"{output} is current")
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output} ({'unchanged' if current == text else 'updated'})")
