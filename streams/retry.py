"""Transient failures: how long to wait them out (which errors are transient: ``streams.faults``).

A consumer must never dead-letter or skip a record because PostgreSQL was restarting,
the broker was briefly unreachable or two transactions collided. Those errors are
*transient*: the same batch is retried, after a capped exponential backoff with jitter
(so N consumers that lost the database together do not hammer it in step).
Everything else is a fact about the data or a bug, and is not retried here.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar


from streams.faults import is_transient

T = TypeVar("T")

@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with "full jitter" (a random delay up to the cap of each step)."""

    initial: float = 0.1
    factor: float = 2.0
    cap: float = 10.0
    jitter: bool = True

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        rng = rng or random.Random()
        step = self.initial
        while True:
            yield rng.uniform(step / 2, step) if self.jitter else step
            step = min(step * self.factor, self.cap)


class Stopped(Exception):
    """Retrying was interrupted because the process was asked to stop."""


def retry_transient(
    work: Callable[[], T],
    *,
    backoff: Backoff = Backoff(),
    stop: threading.Event | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    classify: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run ``work`` until it succeeds; retry (forever) only errors ``classify`` calls transient.

    There is deliberately no attempt limit: a consumer that gave up would have to skip or
    dead-letter the batch, which the transient class must never cause. Operators see the
    retries in the logs and the health endpoint; SIGTERM (``stop``) ends the wait.
    """
    attempt = 0
    for delay in backoff.delays():
        try:
            return work()
        except Exception as exc:
            if not classify(exc):
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise Stopped(f"stopped while retrying after {attempt} attempt(s)") from exc
            else:
                threading.Event().wait(delay)
    raise AssertionError("unreachable")  # pragma: no cover
