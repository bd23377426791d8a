"""``insights demo``: the main job end to end on the local stack."""

from __future__ import annotations

import typer

from insights.cli.context import console, settings_of
from insights.demo import run_demo


def demo(ctx: typer.Context) -> None:
    """Start the local stack and run the pipeline end to end, printing what each step did."""
    run_demo(settings_of(ctx), lambda line: console.print(line, highlight=False))
    console.print("demo finished", style="bold green")
