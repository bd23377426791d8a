"""Entry point: read the settings once, dispatch to a command group, turn errors into one line."""

from __future__ import annotations

import sys

import click
import typer

from insights.cli import produce_cmd, replay_cmd, stack_cmd, topics_cmd
from insights.cli import demo_cmd, status_cmd
from insights.cli import cdc_cmd
from insights.cli import consume_cmd
from insights.cli import db_cmd
from insights.cli import schemas_cmd
from insights.cli import summaries_cmd
from insights.cli.context import err_console
from core.errors import InsightsError
from core.settings import load_settings

app = typer.Typer(
    name="insights",
    help="Amazon Insights ingest: Kafka + Avro events into partitioned PostgreSQL, and CDC back out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(ctx: typer.Context) -> None:
    """Settings come from INSIGHTS_* environment variables or a .env file."""
    ctx.obj = load_settings()


app.add_typer(stack_cmd.app, name="stack")
app.add_typer(db_cmd.app, name="db")
app.add_typer(cdc_cmd.app, name="cdc")
app.command(name="demo")(demo_cmd.demo)
app.command(name="status")(status_cmd.status)
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(produce_cmd.app, name="produce")
app.add_typer(replay_cmd.app, name="replay")
app.command(name="consume")(consume_cmd.consume)
app.add_typer(schemas_cmd.app, name="schemas")
app.add_typer(summaries_cmd.app, name="summaries")


def run() -> None:
    try:
        # without standalone mode click returns typer.Exit's code instead of exiting
        code = app(standalone_mode=False)
    except InsightsError as exc:
        err_console.print(f"insights: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("insights: aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click's usage errors
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
