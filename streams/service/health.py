"""The health of one long-running process, as ``/healthz`` reports it.

Two kinds of evidence, both cheap to record from the hot path:

* **liveness**: the main loop calls :meth:`Health.beat` every iteration; no beat for
  ``stuck_after`` seconds means it hangs (a stuck poll, a deadlock in our own code);
* **reachability**: code that talks to a dependency (``"kafka"``, ``"postgres"``)
  reports :meth:`Health.ok` or :meth:`Health.failing`; a dependency failing for longer
  than ``unreachable_after`` seconds makes the process unhealthy although its loop
  still turns (it keeps retrying, but an orchestrator or a pager should know).

A permanent fault (wrong password, missing table) is reported with
:meth:`Health.fatal` just before the process exits non-zero; one a probe finds while the
loop is busy waiting for something else (PostgreSQL refusing the password while Kafka is
still away) is kept as :attr:`Health.permanent`, for the loop to raise at its next turn.

**One line per outage.** Whoever notices first (the probes, the loop, the writer's
retries, librdkafka's error callback) reports into this object, so it is here, not in
each of them, that the start and the end of a dependency's streak of failures are
logged: once ``<dependency> unreachable`` when the streak starts, once ``<dependency>
reachable again`` when it ends, however many attempts fail in between.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("insights.service")


#: a main loop that has not turned for this long is stuck
DEFAULT_STUCK_AFTER_S = 60.0
#: a dependency failing for this long makes the process unhealthy
DEFAULT_UNREACHABLE_AFTER_S = 30.0


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"healthy": self.healthy, "reasons": self.reasons}


class Health:
    """``stuck_after=None``: no liveness check, for a loop that does not call :meth:`beat`."""

    def __init__(
        self, *, stuck_after: float | None = DEFAULT_STUCK_AFTER_S, unreachable_after: float = DEFAULT_UNREACHABLE_AFTER_S
    ) -> None:
        self.stuck_after = stuck_after
        self.unreachable_after = unreachable_after
        self._lock = threading.Lock()
        self._last_beat = time.monotonic()
        #: dependency -> (monotonic time it started failing, last reason)
        self._failing: dict[str, tuple[float, str]] = {}
        self._fatal: str | None = None
        #: a permanent fault found while the loop was busy elsewhere (see the module doc)
        self.permanent: BaseException | None = None

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def seconds_since_beat(self) -> float:
        return time.monotonic() - self._last_beat

    def ok(self, dependency: str) -> None:
        if dependency in self._failing:  # cheap check first: ok() is called on the hot path
            with self._lock:
                ended = self._failing.pop(dependency, None)
            if ended is not None:
                log.info("%s reachable again", dependency,
                         extra={"dependency": dependency, "down_s": round(time.monotonic() - ended[0], 1)})

    def failing(self, dependency: str, reason: str) -> None:
        """Record a failed attempt; the first one of a streak starts its clock (and is logged)."""
        with self._lock:
            started = dependency not in self._failing
            since = self._failing.get(dependency, (time.monotonic(), reason))[0]
            self._failing[dependency] = (since, reason)
        if started:
            log.warning("%s unreachable", dependency,
                        extra={"dependency": dependency, "error": reason, "retrying": True})

    def is_failing(self, dependency: str) -> bool:
        return dependency in self._failing

    def fatal(self, reason: str) -> None:
        self._fatal = reason

    def found_permanent(self, exc: BaseException, reason: str) -> None:
        """A fault no retry can fix, found outside the loop (a probe): unhealthy now, raised by the loop."""
        # not logged here: the entry point reports the error once, as the one line naming the fix
        if self.permanent is None:
            self.permanent = exc
        self.fatal(reason)

    def report(self) -> HealthReport:
        now = time.monotonic()
        reasons: list[str] = []
        if self._fatal is not None:
            reasons.append(f"fatal: {self._fatal}")
        idle = now - self._last_beat
        if self.stuck_after is not None and idle > self.stuck_after:
            reasons.append(f"main loop stuck for {idle:.0f}s (limit {self.stuck_after:.0f}s)")
        with self._lock:
            failing = dict(self._failing)
        for dependency, (since, reason) in sorted(failing.items()):
            if now - since > self.unreachable_after:
                reasons.append(f"{dependency} unreachable for {now - since:.0f}s: {reason}")
        return HealthReport(not reasons, reasons)
