"""Tables for a terminal and for a pipe, from the same rows.

On a terminal a table fits the width: one column (a name) is shortened in the middle so
that no two rows read alike, and the last column (a reason) folds. Piped or redirected,
it is aligned columns, one line per row, nothing cut or wrapped, so ``grep`` and ``awk``
see every name whole whatever ``COLUMNS`` says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

ELLIPSIS = "…"


def elide(text: str, width: int, head: int) -> str:
    """``text`` in ``width`` characters: ``head`` of its start, an ellipsis, the rest from its end."""
    if len(text) <= width:
        return text
    tail = width - head - 1
    return text[:head] + ELLIPSIS + (text[-tail:] if tail > 0 else "")


def elide_unique(names: Sequence[str], width: int) -> dict[str, str]:
    """Short forms of ``names`` within ``width``, pairwise distinct.

    The end of a name usually tells rows apart (``…product_scraped.dlq``), so most of the
    room goes to it. Where the short form could also be another name's the split moves;
    names that differ only in the middle show a window of it between two ellipses. Only
    when nothing within ``width`` tells a name apart does it stay whole (the table folds it).
    """
    distinct = sorted(set(names))
    short = {n: n for n in distinct}
    for name in (n for n in distinct if len(n) > width):
        taken = {v for k, v in short.items() if k != name}
        preferred = max(width // 3, 1)
        heads = [preferred, *range(preferred - 1, 0, -1), *range(preferred + 1, width - 1)]
        candidates = [elide(name, width, head) for head in heads]
        head, tail = 4, width // 3
        middle = width - head - tail - 2
        if middle > 0:
            candidates += [
                name[:head] + ELLIPSIS + name[m : m + middle] + ELLIPSIS + name[-tail:]
                for m in range(head, len(name) - tail - middle + 1)
            ]
        others = [n for n in distinct if n != name]
        # a short form must point at one name only: another name that reads the same with the
        # same parts elided would make two rows look alike, even if the strings differ
        short[name] = next(
            (c for c in candidates if c not in taken and not any(_could_be(c, o) for o in others)), name
        )
    return short


def _could_be(short: str, name: str) -> bool:
    """Whether ``name`` shortened with the same ellipses could read as ``short``."""
    pattern = ".*".join(re.escape(part) for part in short.split(ELLIPSIS))
    return re.fullmatch(pattern, name, re.DOTALL) is not None


def print_plain(out: Console, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns, one line per row, no cutting and no wrapping: for pipes and files."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for cells in [list(headers), *rows]:
        line = "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)) + "  " + cells[-1]
        out.file.write(line.rstrip() + "\n")
    out.file.flush()


def print_table(
    out: Console,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    elide_column: int,
    styles: Sequence[str | None] | None = None,
    title: str | None = None,
) -> None:
    """A table for a terminal: the ``elide_column`` shortened, the last column folded to the width."""
    if not out.is_terminal:
        print_plain(out, headers, rows)
        return
    fixed = sum(max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)
                if i not in (elide_column, len(headers) - 1))
    # SIMPLE_HEAD without edge padding: one separator and two spaces of padding per column
    spare = out.width - fixed - 3 * len(headers)
    # the name gets what its longest value needs, up to half the room left; the reason the rest
    longest = max([len(headers[elide_column]), *(len(r[elide_column]) for r in rows)])
    budget = max(min(longest, spare // 2), 12)
    short = elide_unique([r[elide_column] for r in rows], budget)
    fits = all(len(v) <= budget for v in short.values())
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title, title_justify="left", expand=False)
    for i, header in enumerate(headers):
        if i == elide_column:
            # not shrunk by the table (the reason column gives way); folded, never cut, when a
            # name had to stay whole (see elide_unique)
            table.add_column(header, no_wrap=fits, overflow="fold", min_width=min(budget, longest))
        elif i == len(headers) - 1:
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, no_wrap=True)
    for n, cells in enumerate(rows):
        shown = list(cells)
        shown[elide_column] = short[cells[elide_column]]
        table.add_row(*shown, style=styles[n] if styles else None)
    out.print(table)
