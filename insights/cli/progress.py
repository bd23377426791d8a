"""Progress of long commands: bars on a terminal, periodic log lines otherwise.

A long command reports ``update(task, done, total)``; what the operator sees depends on
where stderr goes:

* a terminal: a rich bar per task with the count, the rate, the ETA and the elapsed time;
* a pipe, a file, a CI log, a systemd journal: one plain line when a task starts, then at
  most one every :data:`LOG_EVERY_S` seconds, and one when it ends. A bar redrawn into a
  log file is noise, and silence for minutes looks like a hang.

Progress goes to stderr, so stdout keeps only the command's result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from insights.cli.context import err_console

#: seconds between two log lines of one task when stderr is not a terminal
LOG_EVERY_S = 10.0


class Reporter(Protocol):
    def update(self, task: str, done: int, total: int | None = None, note: str = "") -> None:
        """``done`` of ``total`` (None: unknown) units of ``task`` are finished."""

    def finish(self, task: str) -> None:
        """``task`` is over; its last state is shown once more."""


class _CountColumn(ProgressColumn):
    """``12,000/176,000 rows`` (or ``12,000 rows`` while the total is unknown)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        done = int(task.completed)
        if task.total is None:
            return Text(f"{done:,} {self.unit}")
        return Text(f"{done:,}/{int(task.total):,} {self.unit}")


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s")


class Bars:
    """A rich progress display: one bar per task."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def update(self, task: str, done: int, total: int | None = None, note: str = "") -> None:
        if task not in self.tasks:
            self.tasks[task] = self.progress.add_task(task, total=total, note=note)
        self.progress.update(self.tasks[task], completed=done, total=total, note=note)

    def finish(self, task: str) -> None:
        if task in self.tasks:
            found = self.progress.tasks[self.tasks[task]]
            if found.total is None:  # unknown total: the count reached is the total
                self.progress.update(self.tasks[task], total=found.completed)


@dataclass
class _Seen:
    started: float
    done: int = 0
    total: int | None = None
    note: str = ""
    logged_at: float = 0.0


@dataclass
class LogLines:
    """Plain lines: at a task's start, every ``every_s`` seconds, and at its end."""

    what: str
    unit: str
    say: Callable[[str], None]
    every_s: float = LOG_EVERY_S
    clock: Callable[[], float] = time.monotonic
    seen: dict[str, _Seen] = field(default_factory=dict)

    def update(self, task: str, done: int, total: int | None = None, note: str = "") -> None:
        now = self.clock()
        state = self.seen.get(task)
        first = state is None
        if state is None:
            state = self.seen[task] = _Seen(started=now)
        state.done, state.total, state.note = done, total, note
        if first or now - state.logged_at >= self.every_s:
            state.logged_at = now
            self.say(self._line(task, state, now))

    def finish(self, task: str) -> None:
        state = self.seen.get(task)
        if state is not None:
            self.say(self._line(task, state, self.clock(), final=True))

    def _line(self, task: str, state: _Seen, now: float, final: bool = False) -> str:
        elapsed = now - state.started
        count = f"{state.done:,}" + (f"/{state.total:,}" if state.total is not None else "")
        parts = [f"{count} {self.unit}"]
        if elapsed > 0 and state.done:
            rate = state.done / elapsed
            parts.append(f"{rate:,.0f} {self.unit}/s")
            if not final and state.total is not None and state.total > state.done:
                parts.append(f"ETA {timedelta(seconds=round((state.total - state.done) / rate))}")
        if final:
            parts.append(f"done in {timedelta(seconds=round(elapsed))}")
        if state.note:
            parts.append(state.note)
        return f"{self.what}: {task}: " + ", ".join(parts)


def interactive(console: Console = err_console) -> bool:
    """True when progress can be drawn: the console is a terminal that understands cursor moves."""
    return console.is_terminal and not console.is_dumb_terminal


@contextmanager
def reporting(what: str, unit: str = "rows", *, console: Console = err_console) -> Iterator[Reporter]:
    """A reporter for the duration of the block: bars when interactive, log lines otherwise."""
    if interactive(console):
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _CountColumn(unit),
            _RateColumn(unit),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
        )
        with progress:
            yield Bars(progress)
        return
    yield LogLines(what, unit, lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
