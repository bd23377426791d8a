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


class SlotInUseError(CdcError):
    """Another process streams from the slot (SQLSTATE 55006): we are the hot standby."""
