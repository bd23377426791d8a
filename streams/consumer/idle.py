"""When a consumer started with ``--exit-when-idle S`` may call itself done.

"Idle" used to mean "no record for S seconds", with the clock started before the
group had assigned anything. In a group that was wrong: members that joined after the
first one waited through the join, idled out with nothing assigned and left; their
partitions moved to the last member, whose own clock had already run out, and the group
exited "cleanly" with half of the topic unread (issue 17). The rule now:

* **A member with partitions** exits when none of them delivered a record for S seconds,
  counted from the later of its last record and its last assignment change (a partition
  handed over by a leaving member restarts the clock), **and** none of them lags: the
  next offset this process stored (or its fetch position) reaches the high watermark.
* **A member with no partition** never exits on its own clock: it waits for an
  assignment, which may come from a member that leaves. Its one way out: after S seconds
  without an assignment, the group's positions (the offsets stored in PostgreSQL, else
  the group's Kafka commit) reach the high watermark on every partition of its topics,
  so there is nothing left for it to be given. That is what happens to the extra members
  of a group larger than the topic's partition count.

A partition that holds no record (low = high watermark) never lags. Where the group
starts at the end (``auto_offset_reset=latest``), a partition it never stored a position
for does not lag either: there is nothing older it would read. The watermarks are looked
up at most every ``LAG_CHECK_S`` (or every S, if shorter), and a lookup that fails
(the broker away) keeps the process waiting, never lets it exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from streams.consumer.transaction import TopicPartition

#: most seconds between two looks at the watermarks while idle
LAG_CHECK_S = 5.0


def lagging(
    marks: Mapping[TopicPartition, tuple[int, int]],
    positions: Mapping[TopicPartition, int],
    *,
    from_end: bool = False,
) -> dict[TopicPartition, int]:
    """Records still to read per partition (only those that lag), from (low, high) watermarks.

    ``positions`` are next offsets to read (stored, committed or fetched); a partition
    without one starts at ``low`` (or at ``high`` when ``from_end``).
    """
    left: dict[TopicPartition, int] = {}
    for key, (low, high) in marks.items():
        if high <= low:
            continue  # empty, or emptied by retention
        position = positions.get(key)
        if position is None:
            position = high if from_end else low
        if position < high:
            left[key] = high - max(position, low)
    return left


class IdleClock:
    """The idle rule of the module doc, minus the I/O (the loop looks up positions and marks)."""

    def __init__(self, after: float, now: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self._now = now
        #: when this process last saw a record or its assignment changed (the clock's zero)
        self._since = now()
        self._next_look = 0.0

    def saw_records(self) -> None:
        self._since = self._now()

    def assignment_changed(self) -> None:
        self._since = self._now()

    def should_look(self) -> bool:
        """True when the process has been quiet for ``after`` seconds and may look at the lag."""
        now = self._now()
        if now - self._since < self.after or now < self._next_look:
            return False
        self._next_look = now + min(self.after, LAG_CHECK_S)
        return True


def describe_lag(left: Mapping[TopicPartition, int], limit: int = 5) -> dict[str, int]:
    """A few lagging partitions, for a log line."""
    items: Iterable[tuple[TopicPartition, int]] = sorted(left.items())
    return {f"{t}[{p}]": n for (t, p), n in list(items)[:limit]}
