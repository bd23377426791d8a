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

from streams.faults import ErrorClass, dead_letter_class, describe, is_transient

__all__ = ["Action", "Decision", "ErrorPolicy", "default_policy", "describe"]


class Action(Enum):
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    RAISE = "raise"


@dataclass(frozen=True)
class Decision:
    action: Action
    error_class: ErrorClass | None = None


ErrorPolicy = Callable[[BaseException], Decision]

def default_policy(exc: BaseException) -> Decision:
    if is_transient(exc):
        return Decision(Action.RETRY)
    found = dead_letter_class(exc)
    if found is not None:
        return Decision(Action.DEAD_LETTER, found)
    return Decision(Action.RAISE)
