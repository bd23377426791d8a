"""Error classification, in one module: for any exception, what kind of fault is it?

By type and SQLSTATE, never by class-name strings:

* **transient**: waiting and retrying the same work may succeed (PostgreSQL restarting,
  the broker away, a serialization conflict, a registry that does not answer);
* **data**: a fact about the record or its rows (bad bytes, unknown schema, a model
  rule, a constraint); dead-letter it with :func:`dead_letter_class`;
* **permanent**: nothing will change by waiting and the record is not at fault (wrong
  password, missing database or table, no privilege, a bug): stop loudly.
"""

from __future__ import annotations

from enum import Enum

import psycopg
from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from core.errors import RecordError
from streams.serde.errors import (
    CorruptPayloadError,
    IncompatibleSchemaError,
    RegistryUnavailableError,
    SerdeError,
    UnknownSchemaError,
)


class ErrorClass(str, Enum):
    """Why a record was dead-lettered (the ``insights.error.class`` header)."""

    CORRUPT = "corrupt_payload"  # bytes that are not a readable Avro record
    UNKNOWN_SCHEMA = "unknown_schema"  # a schema id / fingerprint we do not know
    VALIDATION = "validation"  # decodes, but breaks the event model's rules
    CONSTRAINT = "constraint"  # its own rows violate a database constraint


# SQLSTATE classes that say "try again later", not "your data is wrong":
# 08 connection exception, 40 transaction rollback (serialization, deadlock),
# 53 insufficient resources, 57P operator intervention (admin shutdown, cannot connect now),
# 58 system error (I/O), 55P03 lock not available (a lock_timeout expired).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "58", "55P03")

# SQLSTATE classes that are a fact about the data: 22 data exception (bad value,
# out of range), 23 integrity constraint violation (FK, unique, check, not null),
# 21 cardinality violation (one statement touching a row twice).
_DATA_SQLSTATE_PREFIXES = ("21", "22", "23")

# SQLSTATEs no retry fixes and no record causes: 28 invalid authorization (wrong password,
# no such role, no pg_hba entry), 3D000 no such database, 42501 insufficient privilege,
# 42P01 undefined table and 3F000 no such schema (the database was not migrated)
_PERMANENT_SQLSTATES = {"28000", "28P01", "3D000", "42501", "42P01", "3F000"}

# libpq's words for the same refusals while connecting, when psycopg has no SQLSTATE yet
_PG_PERMANENT_TEXTS = (
    "password authentication failed",
    "authentication failed for user",
    "no password supplied",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
)
_PG_MISSING = ('database "', 'role "')

_KAFKA_PERMANENT_CODES = {
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}

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


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, then what caused it or was being handled when it was raised."""
    seen: set[int] = set()
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def is_transient(exc: BaseException) -> bool:
    """True when waiting and retrying the same work may succeed.

    Wrapped errors count by their cause: a helper that turns a dropped connection into
    its own error type (``raise PartitionError(...) from exc``) is still transient. A
    permanent refusal (:func:`is_permanent`) never is, whatever else the chain holds:
    libpq reports a wrong password as an ``OperationalError`` without SQLSTATE, which
    would otherwise look like a connection that broke and be retried forever.
    """
    chain = _chain(exc)
    if any(_permanent_itself(link) for link in chain):
        return False
    return any(_transient_itself(link) for link in chain)


def is_permanent(exc: BaseException) -> bool:
    """True when no retry can help and no record is at fault: wrong password or role, no
    privilege, no such database, tables missing (not migrated), a Kafka ACL or SASL refusal.
    The process must stop with the fix, not retry and not dead-letter."""
    return any(_permanent_itself(link) for link in _chain(exc))


def _permanent_itself(exc: BaseException) -> bool:
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        return isinstance(err, KafkaError) and err.code() in _KAFKA_PERMANENT_CODES
    if not isinstance(exc, psycopg.Error):
        return False
    state = getattr(exc, "sqlstate", None)
    if state:
        return state in _PERMANENT_SQLSTATES
    if not isinstance(exc, psycopg.OperationalError):
        return False
    # no SQLSTATE: the connection never opened; libpq's text says whether it was refused
    text = str(exc)
    if any(s in text for s in _PG_PERMANENT_TEXTS):
        return True
    return "does not exist" in text and any(s in text for s in _PG_MISSING)


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, RegistryUnavailableError):  # never the record's fault
        return True
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


def is_data_error(exc: BaseException) -> bool:
    """True when a database error is caused by the rows written, not by the server."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.Error) and bool(state) and state.startswith(_DATA_SQLSTATE_PREFIXES)


def dead_letter_class(exc: BaseException) -> ErrorClass | None:
    """The dead-letter class of an error that is the record's fault; None when it is not."""
    if isinstance(exc, UnknownSchemaError | IncompatibleSchemaError):
        return ErrorClass.UNKNOWN_SCHEMA
    if isinstance(exc, CorruptPayloadError | SerdeError):
        return ErrorClass.CORRUPT
    if isinstance(exc, ValidationError | RecordError | ValueError | TypeError | KeyError):
        # the record decoded but is not a valid event (model rules, missing field)
        return ErrorClass.VALIDATION
    if is_data_error(exc):
        return ErrorClass.CONSTRAINT
    return None


def describe(exc: BaseException) -> str:
    """A one-paragraph reason for logs and DLQ headers: class and message, no traceback."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors()[:5]]
        return f"ValidationError: {'; '.join(parts)}"
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        return f"{type(exc).__name__} [{exc.sqlstate}]: {diag.message_primary or exc}{detail}"
    return f"{type(exc).__name__}: {exc}"
