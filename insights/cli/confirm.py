"""Confirmation of destructive commands: show what will go, ask, or require ``--yes``.

The caller prints what the command is about to destroy first; then :func:`confirm`
asks on a terminal. Without a terminal to ask on (a script, cron, CI) a destructive
command refuses unless it was given ``--yes``: an unattended yes must be written down.
"""

from __future__ import annotations

import sys

import typer

from core.errors import InsightsError


class ConfirmationRequired(InsightsError):
    """A destructive command ran without a terminal to ask on and without ``--yes``."""

    exit_code = 2


class NotConfirmed(InsightsError):
    """The operator answered no."""


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def confirm(question: str, *, yes: bool, refused: str) -> None:
    """Return when the operator agreed (or passed ``--yes``); raise otherwise.

    ``refused`` says what was not done, e.g. ``"no partition dropped"``.
    """
    if yes:
        return
    if not stdin_is_terminal():
        raise ConfirmationRequired(f"{refused}: confirmation needed and stdin is not a terminal; pass --yes")
    # the prompt goes to stderr with the listing, so stdout stays the command's result
    if not typer.confirm(question, default=False, err=True):
        raise NotConfirmed(f"{refused}: not confirmed")
