"""Item 8 of issue 10, the machinery: progress as bars on a terminal and as periodic lines
elsewhere; destructive commands ask, or refuse without a terminal unless given --yes."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from insights.cli import confirm as confirm_mod
from insights.cli.confirm import ConfirmationRequired, NotConfirmed, confirm
from insights.cli.progress import Bars, LogLines, reporting


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_at_start_every_interval_and_at_the_end() -> None:
    clock, said = Clock(), []
    log = LogLines("cdc snapshot", "rows", said.append, every_s=10.0, clock=clock)
    log.update("public.products", 0, 2000)
    for done in range(100, 1100, 100):  # one update a second; the tenth is 10 s after the first line
        clock.now += 1
        log.update("public.products", done, 2000)
    clock.now += 2  # too soon for another line
    log.update("public.products", 1200, 2000)
    log.finish("public.products")
    assert said == [
        "cdc snapshot: public.products: 0/2,000 rows",
        "cdc snapshot: public.products: 1,000/2,000 rows, 100 rows/s, ETA 0:00:10",
        "cdc snapshot: public.products: 1,200/2,000 rows, 100 rows/s, done in 0:00:12",
    ]


def test_log_lines_without_a_known_total_give_count_and_rate() -> None:
    clock, said = Clock(), []
    log = LogLines("produce", "events", said.append, clock=clock)
    log.update("producing scrape", 1, None, note="+0 dup")
    clock.now += 4
    log.update("producing scrape", 401, None, note="+3 dup")
    log.finish("producing scrape")
    assert said[-1] == "produce: producing scrape: 401 events, 100 events/s, done in 0:00:04, +3 dup"


def test_a_terminal_gets_bars_with_count_rate_and_eta() -> None:
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=160, color_system=None)
    with reporting("cdc snapshot", "rows", console=terminal) as progress:
        assert isinstance(progress, Bars)
        progress.update("public.products", 0, 2000)
        progress.update("public.products", 1000, 2000, note="halfway")
    text = out.getvalue()
    assert "public.products" in text and "1,000/2,000 rows" in text and "ETA" in text and "halfway" in text


def test_a_pipe_gets_log_lines() -> None:
    out = io.StringIO()
    pipe = Console(file=out, force_terminal=False, width=80)
    with reporting("db partitions", "partitions", console=pipe) as progress:
        assert isinstance(progress, LogLines)
        progress.update("prune", 1, 2, note="alerts_2019_01")
        progress.finish("prune")
    assert out.getvalue().splitlines()[0] == "db partitions: prune: 1/2 partitions, alerts_2019_01"


def test_confirm_with_yes_asks_nothing(monkeypatch) -> None:
    monkeypatch.setattr(confirm_mod, "stdin_is_terminal", lambda: False)
    confirm("Drop?", yes=True, refused="nothing dropped")


def test_confirm_without_a_terminal_refuses_with_exit_2(monkeypatch) -> None:
    monkeypatch.setattr(confirm_mod, "stdin_is_terminal", lambda: False)
    with pytest.raises(ConfirmationRequired) as refused:
        confirm("Drop?", yes=False, refused="no partition dropped")
    assert refused.value.exit_code == 2
    assert str(refused.value) == "no partition dropped: confirmation needed and stdin is not a terminal; pass --yes"


@pytest.mark.parametrize(("answer", "agreed"), [("y\n", True), ("n\n", False), ("\n", False)])
def test_confirm_on_a_terminal_asks(monkeypatch, capsys, answer: str, agreed: bool) -> None:
    monkeypatch.setattr(confirm_mod, "stdin_is_terminal", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    if agreed:
        confirm("Drop these 2 partition(s)?", yes=False, refused="no partition dropped")
    else:
        with pytest.raises(NotConfirmed, match="no partition dropped: not confirmed"):
            confirm("Drop these 2 partition(s)?", yes=False, refused="no partition dropped")
    assert "Drop these 2 partition(s)? [y/N]" in capsys.readouterr().err
