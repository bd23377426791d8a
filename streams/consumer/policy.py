"""The error policy: for an exception about one record or one batch, what to do.

Three answers only (in the spirit of Quix Streams' error callbacks, but explicit):
dead-letter the record with a class, retry the batch (transient), or stop the process
(a bug, or a fault no retry can fix). The loop asks the policy; a sink or a deployment
can pass its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import psycopg
from pydantic import ValidationError

from insights.errors import RecordError
from streams.dlq import ErrorClass
from streams.retry import is_transient


class Action(Enum):
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    RAISE = "raise"


@dataclass(frozen=True)
class Decision:
    action: Action
    error_class: ErrorClass | None = None


ErrorPolicy = Callable[[BaseException], Decision]

# SQLSTATE classes that are a fact about the data: 22 data exception (bad value,
# out of range), 23 integrity constraint violation (FK, unique, check, not null),
# 21 cardinality violation (one statement touching a row twice).
_DATA_SQLSTATE_PREFIXES = ("21", "22", "23")


def is_data_error(exc: BaseException) -> bool:
    """True when a database error is caused by the rows written, not by the server."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.Error) and bool(state) and state.startswith(_DATA_SQLSTATE_PREFIXES)


def serde_class(exc: BaseException) -> ErrorClass | None:
    """The dead-letter class of a decoding error (by class name: serde may be absent)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "UnknownSchemaError" in names or "IncompatibleSchemaError" in names:
        return ErrorClass.UNKNOWN_SCHEMA
    if "SerdeError" in names or "CorruptPayloadError" in names:
        return ErrorClass.CORRUPT
    return None


def default_policy(exc: BaseException) -> Decision:
    # a registry that does not answer is never the record's fault
    if is_transient(exc) or type(exc).__name__ == "RegistryUnavailableError":
        return Decision(Action.RETRY)
    found = serde_class(exc)
    if found is not None:
        return Decision(Action.DEAD_LETTER, found)
    if isinstance(exc, ValidationError | RecordError | ValueError | TypeError | KeyError):
        # the record decoded but is not a valid event (model rules, missing field)
        return Decision(Action.DEAD_LETTER, ErrorClass.VALIDATION)
    if is_data_error(exc):
        return Decision(Action.DEAD_LETTER, ErrorClass.CONSTRAINT)
    return Decision(Action.RAISE)


def describe(exc: BaseException) -> str:
    """A one-paragraph reason for the DLQ header: class and message, no traceback."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors()[:5]]
        return f"ValidationError: {'; '.join(parts)}"
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        return f"{type(exc).__name__} [{exc.sqlstate}]: {diag.message_primary or exc}{detail}"
    return f"{type(exc).__name__}: {exc}"
