"""Transient failures: which errors are worth waiting out, and how long to wait.

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

import psycopg
from confluent_kafka import KafkaError, KafkaException

T = TypeVar("T")

# SQLSTATE classes that say "try again later", not "your data is wrong":
# 08 connection exception, 40 transaction rollback (serialization, deadlock),
# 53 insufficient resources, 57P operator intervention (admin shutdown, cannot connect now),
# 58 system error (I/O), 55P03 lock not available (a lock_timeout expired).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "58", "55P03")


def is_transient(exc: BaseException) -> bool:
    """True when waiting and retrying the same work may succeed.

    Wrapped errors count by their cause: a helper that turns a dropped connection into
    its own error type (``raise PartitionError(...) from exc``) is still transient.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError):
            return bool(err.retriable()) or (not err.fatal() and err.code() in _KAFKA_TRANSIENT_CODES)
        return False
    if isinstance(exc, psycopg.Error):
        state = getattr(exc, "sqlstate", None)
        if state:
            return state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        # no SQLSTATE: the connection broke (server gone, socket closed, pool timeout)
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(exc, ConnectionError | TimeoutError | BufferError)


_KAFKA_TRANSIENT_CODES = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


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
