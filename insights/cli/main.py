"""Entry point: read the settings once, dispatch to a command group, turn errors into one line.

Exit codes: 0 success; 1 a predictable failure (a service down, a refused password, a
missing migration: one line naming the fix) or an unexpected error (one line and the path
of the file holding its traceback); 2 a usage error (typer prints the usage) or a bad
setting; 3 topics that drift from their declaration; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import logging
import sys

import typer

from core.errors import Interrupted
from core.settings import Settings, load_settings
from insights.stack.replicas import local_stack_dsn
from insights import __version__
from insights.cli import backup_cmd, cdc_cmd, consume_cmd, db_cmd, demo_cmd, produce_cmd, replay_cmd, schemas_cmd
from insights.cli import rules_cmd, stack_cmd, status_cmd, summaries_cmd, topics_cmd
from insights.cli import archive_cmd, dlq_cmd, replay_events_cmd
from insights.cli.context import err_console
from insights.cli.failures import log_traceback, operator_error
from streams.service.logs import json_logging_active

PROG = "insights"

app = typer.Typer(
    name=PROG,
    help="Amazon Insights ingest: Kafka + Avro events into partitioned PostgreSQL, and CDC back out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # `insights --install-completion` / `--show-completion` for bash, zsh, fish, PowerShell
    add_completion=True,
)

#: the settings the callback read, for naming addresses and roles in failure messages
_loaded: list[Settings] = []


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {version()}")
        raise typer.Exit()


def version() -> str:
    """The installed distribution's version (what pip installed), else the package's own."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("amazon-insights-ingest")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return __version__


@app.callback()
def main(
    ctx: typer.Context,
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Settings come from INSIGHTS_* environment variables or a .env file."""
    ctx.obj = local_stack_dsn(load_settings())
    _loaded[:] = [ctx.obj]


app.add_typer(stack_cmd.app, name="stack")
app.add_typer(db_cmd.app, name="db")
app.add_typer(cdc_cmd.app, name="cdc")
app.command(name="demo")(demo_cmd.demo)
app.add_typer(status_cmd.app, name="status")
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(produce_cmd.app, name="produce")
app.add_typer(replay_cmd.app, name="replay")
replay_cmd.app.command(name="events")(replay_events_cmd.events)
app.add_typer(dlq_cmd.app, name="dlq")
app.add_typer(archive_cmd.app, name="archive")
app.command(name="consume")(consume_cmd.consume)
app.add_typer(schemas_cmd.app, name="schemas")
app.add_typer(summaries_cmd.app, name="summaries")
app.add_typer(rules_cmd.app, name="rules")
app.add_typer(backup_cmd.app, name="backup")


def _say(line: str, exit_code: int = 1) -> None:
    if json_logging_active():
        # a service logging JSON keeps stderr one object per line, its last line included
        logging.getLogger(PROG).error(line, extra={"exit_code": exit_code})
        return
    # soft_wrap: one line however narrow the terminal; no markup: messages quote user input
    err_console.print(line, highlight=False, markup=False, soft_wrap=True)


def fail(exc: BaseException) -> int:
    """Print ``exc`` as one line and return the exit code (the traceback goes to a file)."""
    known = operator_error(exc, _loaded[0] if _loaded else None)
    if isinstance(known, Interrupted):
        _say(f"{PROG}: interrupted: {known}", known.exit_code)
        return known.exit_code
    if known is not None:
        _say(f"{PROG}: error: {known}", known.exit_code)
        return known.exit_code
    try:
        where = f"full traceback in {log_traceback(exc)}"
    except OSError as write_error:  # no writable temp dir: the line must still come out
        where = f"the traceback could not be written: {write_error}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    _say(f"{PROG}: unexpected error: {type(exc).__name__}{': ' + first if first else ''} ({where}; please report it)")
    return 1


def run() -> None:
    """The console script. Typer runs in standalone mode: it prints usage errors with the
    usage and exits 2, answers --help and --version, and turns Ctrl-C into exit 130; what
    escapes it is a command's own failure."""
    try:
        app(prog_name=PROG)
    except SystemExit:
        raise
    except KeyboardInterrupt:  # outside typer's reach (while importing a command's modules)
        _say(f"{PROG}: interrupted")
        sys.exit(130)
    except Exception as exc:
        sys.exit(fail(exc))
