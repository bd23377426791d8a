"""Self-healing of the CDC reader: which failures lose the stream for a while, and saying so once.

A reader meant to run unattended for months must ride through what operators do to
PostgreSQL and Kafka: ``pg_terminate_backend`` of its walsender (SQLSTATE 57P01), a
restart or failover of the server, a network cut, the broker away. Those failures lose
the *stream*, not the data: the slot keeps every change after its confirmed position, so
the reader reconnects (capped exponential backoff with jitter, ``streams.retry.Backoff``)
and starts again from the position it knows is safe.

Everything else ends the reader with its documented exit code: a lost or missing slot
(3), a wrong password, a missing publication, a protocol or decoding error, a record
Kafka refuses for good (1). A permanent error is never retried forever, so the test is
positive: only what is known to be transient is retried.
"""

from __future__ import annotations

import logging
import time

import psycopg
from confluent_kafka import KafkaException

from streams.cdc.errors import (
    BinaryModeError, CdcError, DecodeError, IncompatibleSchemaChangeError, RegistryRefusedError, SlotLostError, SlotMissingError,
    UnrepresentableValueError,
)
from streams.faults import is_transient
from streams.serde.errors import RegistryUnavailableError

# SQLSTATE classes of a stream that may come back: 08 connection exception, 57P operator
# intervention (admin/crash shutdown, cannot connect now), 53 insufficient resources
# (too many connections), 58 system error, 25006 read-only transaction (the server was
# demoted: a multi-host DSN finds the new primary on reconnection).
_TRANSIENT_SQLSTATES = ("08", "57P", "53", "58", "25006")

# libpq's words (no SQLSTATE before a session exists) for a server that is away, not wrong.
# Checked after _PERMANENT_TEXT: "connection to server at ... failed: FATAL: password
# authentication failed" names the connection too.
_TRANSIENT_TEXT = (
    "connection refused",
    "could not connect",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "timeout expired",
    "server closed the connection",
    "terminating connection",
    "connection lost",
    "connection reset",
    "network is unreachable",
    "no route to host",
    "could not receive data",
    "could not send data",
    "ssl syscall error",
    "eof detected",
    "too many clients",
    "remaining connection slots",
    "no message from the server",
    "could not translate host name",
    "is the server running",
    "session is read-only",  # a multi-host DSN while the standby is not promoted yet
)

# ... and for a configuration that waiting does not fix.
_PERMANENT_TEXT = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "must be superuser or replication role",
    "must have replication",
    "authentication failed",
)


def stream_lost(exc: BaseException) -> bool:
    """True when ``exc`` means the stream went away for a while (reconnect), False when it must end the reader."""
    if isinstance(exc, (SlotLostError, SlotMissingError, DecodeError, IncompatibleSchemaChangeError,
                        UnrepresentableValueError, RegistryRefusedError, BinaryModeError)):
        return False  # (some name columns or quote HTTP bodies, which could look like a transient error's words)
    if isinstance(exc, RegistryUnavailableError):
        # the reader waits a registry outage out where it meets it (RegistryOutage); one met
        # anywhere else is still only an outage: starting again from the confirmed position is safe
        return True
    if isinstance(exc, KafkaException):
        return is_transient(exc)
    state = getattr(exc, "sqlstate", None)
    if isinstance(exc, (CdcError, psycopg.Error)) and state:
        return state.startswith(_TRANSIENT_SQLSTATES)
    if isinstance(exc, (CdcError, psycopg.Error)):
        text = _texts(exc)
        if any(p in text for p in _PERMANENT_TEXT):
            return False
        return any(t in text for t in _TRANSIENT_TEXT)
    return isinstance(exc, (ConnectionError, TimeoutError))


def _texts(exc: BaseException) -> str:
    """The messages of ``exc`` and what it was raised from (``raise CdcError(...) from None``
    still keeps its context), lower-cased."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return " | ".join(parts).lower()


class Outage:
    """Logs a stream's loss once when it starts and once when it ends (the operator's contract).

    Attempts in between are logged at debug level only: a reader waiting out a ten-minute
    PostgreSQL upgrade writes two lines, not three hundred.
    """

    def __init__(self, log: logging.Logger, cap_s: float) -> None:
        self.log = log
        self.cap_s = cap_s
        self.since: float | None = None
        self.attempts = 0
        self.lost_total = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def lost(self, exc: BaseException, position: str) -> None:
        self.attempts += 1
        if self.since is None:
            self.since = time.monotonic()
            self.lost_total += 1
            self.log.warning(
                "lost the replication stream: %s; reconnecting with backoff (at most %.0f s apart), "
                "resuming from %s", _one_line(exc), self.cap_s, position,
                extra={"reason": _one_line(exc), "resume_lsn": position},
            )
        else:
            self.log.debug("still no stream (attempt %d): %s", self.attempts, _one_line(exc))

    def regained(self, position: str) -> None:
        if self.since is None:
            return
        seconds = time.monotonic() - self.since
        self.log.info(
            "regained the replication stream after %.1f s (%d attempts); resuming from %s",
            seconds, self.attempts, position,
            extra={"outage_s": round(seconds, 3), "attempts": self.attempts, "resume_lsn": position},
        )
        self.since = None
        self.attempts = 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class RegistryOutage:
    """Typed events: the schema registry away while a change needs its table's version.

    The reader waits where it is (the change it could not write is written when the registry
    answers, so nothing is lost or reordered), keeps the walsender and Kafka served, and logs
    once when the wait starts and once when it ends, like :class:`Outage`.
    """

    def __init__(self, log: logging.Logger, cap_s: float) -> None:
        self.log = log
        self.cap_s = cap_s
        self.since: float | None = None
        self.attempts = 0
        self.total = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def lost(self, exc: BaseException, position: str) -> None:
        self.attempts += 1
        if self.since is None:
            self.since = time.monotonic()
            self.total += 1
            self.log.warning(
                "schema registry unavailable: %s; waiting with backoff (at most %.0f s apart) before the change "
                "at %s, reading paused", _one_line(exc), self.cap_s, position,
                extra={"reason": _one_line(exc), "wait_lsn": position},
            )
        else:
            self.log.debug("schema registry still unavailable (attempt %d): %s", self.attempts, _one_line(exc))

    def regained(self) -> None:
        if self.since is None:
            return
        seconds = time.monotonic() - self.since
        self.log.info(
            "schema registry answers again after %.1f s (%d attempts): reading resumed", seconds, self.attempts,
            extra={"outage_s": round(seconds, 3), "attempts": self.attempts},
        )
        self.since = None
        self.attempts = 0
