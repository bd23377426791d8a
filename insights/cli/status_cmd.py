"""``insights status [--json]`` and ``insights status lag``: the pipeline at a glance, for people and pagers.

One :class:`~insights.status.Report` is rendered either as JSON or as a table (see
:mod:`insights.cli.tables`: fitted to a terminal, one whole line per row when piped).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from insights.cli.context import console, settings_of
from insights.cli.lag_cmd import lag
from insights.cli.tables import print_table

if TYPE_CHECKING:
    from insights.status import Report

EXIT_CODE_HELP = """\
One look at the whole pipeline: PostgreSQL and migrations, Kafka and topics, dead letters
not yet replayed or purged, consumer lag (records and seconds), the CDC slot's WAL,
summary freshness, partitions created ahead. Every row is ok, warn, fail or unknown,
with its reason; thresholds are INSIGHTS_STATUS_* settings.

\b
Exit codes (Nagios plugin convention; the worst row decides):
  0  OK        every row within its thresholds
  1  WARNING   a row beyond a *_WARN threshold
  2  CRITICAL  a row beyond a *_FAIL threshold, or something missing or lost
  3  UNKNOWN   PostgreSQL or Kafka did not answer, so its checks did not run
CRITICAL outranks UNKNOWN, which outranks WARNING.
"""

app = typer.Typer(help=EXIT_CODE_HELP, invoke_without_command=True, no_args_is_help=False)

STATE_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "unknown": "magenta"}


def render(out: Console, report: Report) -> None:
    """The report as a table (see the module doc)."""
    headers = ("STATE", "AREA", "NAME", "REASON")
    rows = [(c.state, c.area, c.name, c.reason) for c in report.checks]
    styles = [STATE_STYLE.get(c.state) if c.state != "ok" else None for c in report.checks]
    print_table(out, headers, rows, elide_column=2, styles=styles)
    summary = f"{report.state.upper()} (exit {report.exit_code})"
    if out.is_terminal:
        out.print(summary, style=STATE_STYLE.get(report.state), highlight=False)
    else:
        out.file.write(summary + "\n")


@app.callback()
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="print JSON: state, exit_code, checks with metrics, thresholds"),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from insights.status import gather  # lazy: CLI start-up of the other commands

    report = gather(settings_of(ctx))
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        render(console, report)
    raise typer.Exit(report.exit_code)


app.command(name="lag")(lag)
