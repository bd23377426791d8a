"""Errors of the CDC reader, all under the project's one root."""

from __future__ import annotations

from core.errors import InsightsError


class CdcError(InsightsError):
    """The CDC reader cannot go on (replication protocol, Kafka delivery, setup)."""


class DecodeError(CdcError):
    """A pgoutput message that does not parse: a protocol mismatch, never bad user data."""


class SlotLostError(CdcError):
    """The slot's WAL was removed (wal_status = lost, SQLSTATE 55000): changes are gone."""

    exit_code = 3

    def __init__(self, slot: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"replication slot {slot!r} is lost: PostgreSQL removed WAL it still needed{extra}. "
            "Changes since its confirmed position are gone. Recover with "
            "`insights cdc drop --yes` then `insights cdc snapshot` (re-creates the slot and "
            "re-emits every row as read events); see docs/cdc.md#lost-slot-recovery"
        )
        self.slot = slot


class SlotMissingError(CdcError):
    """The publication exists but the slot does not: the slot was lost, not never made.

    After a failover on PostgreSQL < 17 the promoted server has the publication (it is in
    the catalog, replicated) but no logical slot (slots are not). Creating a fresh slot
    silently would skip every change between the old slot's position and now, so the
    reader stops instead; ``insights cdc resync`` rebuilds slot, snapshot and summaries.
    """

    exit_code = 3

    def __init__(self, slot: str, publication: str, timeline: int | None = None) -> None:
        promoted = f" This server is on timeline {timeline}: it was promoted." if timeline and timeline > 1 else ""
        super().__init__(
            f"replication slot {slot!r} does not exist but publication {publication!r} does: the slot was lost "
            f"(a failover to a standby, which never has logical slots before PostgreSQL 17, or a manual drop).{promoted} "
            "Changes after its last confirmed position cannot be streamed. Recover with `insights cdc resync` "
            "(new slot, a snapshot of every row, summaries rebuilt); see docs/runbooks.md#primary-lost"
        )
        self.slot = slot


class SlotInUseError(CdcError):
    """Another process streams from the slot (SQLSTATE 55006): we are the hot standby."""


class IncompatibleSchemaChangeError(CdcError):
    """Typed events: a table's new schema fails its compatibility level against the registered versions.

    The reader stops before publishing the change that needs it, so nothing incompatible
    reaches the topic; the slot keeps the change, and the next run meets it again.
    """

    exit_code = 4

    def __init__(self, subject: str, level: str, against: str, reasons: list[str]) -> None:
        super().__init__(
            f"the schema of {subject} changed in a way that is not {level}-compatible with {against}: "
            f"{'; '.join(reasons)}. Revert the ALTER TABLE, or set INSIGHTS_CDC_TYPED_ALLOW_INCOMPATIBLE=true "
            "to register the new version anyway once its consumers are ready (docs/cdc.md#typed-change-events)"
        )
        self.subject = subject
        self.reasons = reasons


class UnrepresentableValueError(CdcError):
    """Typed events: a value the column's Avro type cannot carry (a numeric NaN, an infinite timestamp)."""

    def __init__(self, table: str, column: str, reason: str) -> None:
        super().__init__(
            f"{table}.{column}: {reason}, which its typed Avro field cannot carry. Publish this table with "
            "INSIGHTS_CDC_FORMAT=generic (it keeps PostgreSQL's text), or keep such values out with a CHECK "
            "constraint (docs/cdc.md#typed-change-events)"
        )
        self.column = column


class RegistryRefusedError(CdcError):
    """Typed events: the schema registry answered, and its answer does not change by waiting
    (401/403: wrong or missing credentials; another 4xx: a request it will never accept).

    An unreachable or failing registry (no answer, 5xx, 408, 429) is not this: the reader waits
    it out (``streams.serde.errors.RegistryUnavailableError``, docs/cdc.md#self-healing).
    """

    def __init__(self, status: int, detail: str) -> None:
        fix = ("check INSIGHTS_SCHEMA_REGISTRY_URL's credentials and the subject's permissions"
               if status in (401, 403) else "the request is one the registry will never accept")
        super().__init__(f"the schema registry refused the reader (HTTP {status}: {detail}): {fix}")
        self.status = status


class BinaryModeError(CdcError):
    """``INSIGHTS_CDC_PGOUTPUT_BINARY``: a published column of a type binary mode cannot decode."""

    def __init__(self, table: str, column: str, type_name: str) -> None:
        super().__init__(
            f"{table}.{column} is of type {type_name}, which the reader cannot decode from pgoutput's binary "
            "format: set INSIGHTS_CDC_PGOUTPUT_BINARY=false (text mode, the default, publishes every type); "
            "see docs/cdc.md#pgoutput-binary-mode"
        )
        self.column = column
