"""What every command receives: the settings read once at the entry point, and a console."""

from __future__ import annotations

import typer
from rich.console import Console

from core.settings import Settings

console = Console()
err_console = Console(stderr=True)


def settings_of(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    settings = root.obj
    if not isinstance(settings, Settings):  # pragma: no cover - wiring error
        raise RuntimeError("settings were not loaded by the entry point")
    return settings
