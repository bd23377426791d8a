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


# --- predictable operator failures ----------------------------------------------------
# Raised (or mapped to, by the CLI's insights/cli/failures.py) when the cause is outside
# the program and the message can name the fix. Lower layers may raise them directly once
# they know the situation (e.g. the consumer loop on a missing consumer_offsets table);
# the CLI prints the message as is, one line, no traceback.


class NotMigratedError(InsightsError):
    """The database lacks the project's tables: ``insights db migrate`` has not run on it."""

    def __init__(self, detail: str = "", *, database: str | None = None) -> None:
        where = f" {database!r}" if database else ""
        because = f" ({detail})" if detail else ""
        super().__init__(f"database{where} not migrated{because}: run `insights db migrate`")


class PrivilegeError(InsightsError):
    """The connected role lacks a privilege; the message names the role that has it."""


class AuthenticationError(InsightsError):
    """A service refused the credentials (wrong password, unknown user)."""


class ServiceUnavailableError(InsightsError):
    """PostgreSQL, Kafka or the schema registry does not answer at the configured address."""


class Interrupted(InsightsError):
    """The operator stopped the command (Ctrl-C); the message says what was done by then."""

    exit_code = 130


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


class RecordTooLargeError(RecordError):
    """A record over a hostile-input limit (``INSIGHTS_MAX_*``): refused before PostgreSQL."""
