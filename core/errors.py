"""One exception root for the whole project, in the spirit of psycopg's errors tree.

Every error a user can meet derives from :class:`InsightsError`; the CLI turns any of
them into one line on stderr and a non-zero exit code instead of a traceback.
Errors that happen while handling a Kafka record carry its coordinates.
"""

from __future__ import annotations


class InsightsError(Exception):
    """Root of every error raised on purpose by this project."""

    #: process exit code the CLI uses for this class of error
    exit_code: int = 1


class ConfigError(InsightsError):
    """A setting is missing or malformed."""

    exit_code = 2


class StackError(InsightsError):
    """The local stack (PostgreSQL, Kafka, PgBouncer) cannot be installed, started or reached."""


class RecordError(InsightsError):
    """Something is wrong with one Kafka record; carries where it came from."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def __str__(self) -> str:
        base = super().__str__()
        if self.topic is None:
            return base
        return f"{base} (at {self.coordinates})"
