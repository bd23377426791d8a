"""The replication socket: COPY BOTH over psycopg's low-level ``pq`` layer.

psycopg has no replication API; since 3.3 its ``pq.PGconn`` accepts COPY BOTH results,
so this module speaks the walsender protocol directly and stays small: connect with
``replication=database``, run replication commands with the simple query protocol,
then read CopyData frames (blocking on the socket with ``select``, never spinning) and
write standby status updates. Everything else in the package is I/O-free.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass

from psycopg import OperationalError, pq, sql

from streams.cdc.errors import CdcError, SlotInUseError
from streams.cdc.lsn import format_lsn
from streams.cdc.protocol import standby_status

# the walsender prints tuple values with these settings; values.py relies on them
SESSION_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres"


class ReplicationError(CdcError):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message if not sqlstate else f"{message} (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class CreatedSlot:
    name: str
    consistent_point: str
    snapshot_name: str | None


def _error_of(result: pq.abc.PGresult | None, pgconn: pq.PGconn) -> ReplicationError:
    if result is None:
        return ReplicationError(pgconn.get_error_message().decode(errors="replace").strip() or "connection lost")
    raw_state = result.error_field(pq.DiagnosticField.SQLSTATE)
    state = raw_state.decode() if raw_state else None
    text = result.error_message.decode(errors="replace").strip()
    if state == "55006":
        return SlotInUseError(text)
    return ReplicationError(text, state)


class ReplicationConnection:
    def __init__(self, conninfo: str) -> None:
        self.pgconn = pq.PGconn.connect(conninfo.encode())
        if self.pgconn.status != pq.ConnStatus.OK:
            message = self.pgconn.get_error_message().decode(errors="replace").strip()
            self.pgconn.finish()
            raise CdcError(f"cannot open a replication connection: {message}")
        self.streaming = False

    # --- commands --------------------------------------------------------------------
    def command(self, query: str | sql.Composable) -> list[tuple[str | None, ...]]:
        """Run one replication command (simple query protocol); rows as text."""
        text = query if isinstance(query, str) else query.as_string(None)
        result = self.pgconn.exec_(text.encode())
        if result.status == pq.ExecStatus.TUPLES_OK:
            return [
                tuple(
                    None if (v := result.get_value(r, c)) is None else bytes(v).decode()
                    for c in range(result.nfields)
                )
                for r in range(result.ntuples)
            ]
        if result.status == pq.ExecStatus.COMMAND_OK:
            return []
        raise _error_of(result, self.pgconn)

    def create_slot(self, slot: str, export_snapshot: bool) -> CreatedSlot:
        mode = "export" if export_snapshot else "nothing"
        rows = self.command(
            sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT {})").format(
                sql.Identifier(slot), sql.Literal(mode)
            )
        )
        name, point, snapshot, _plugin = rows[0]
        return CreatedSlot(name or slot, point or "0/0", snapshot)

    def start(self, slot: str, publication: str, start_lsn: int = 0) -> None:
        query = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {}, messages 'true')"
        ).format(
            sql.Identifier(slot),
            sql.SQL(format_lsn(start_lsn)),
            sql.Literal(sql.Identifier(publication).as_string(None)),
        )
        result = self.pgconn.exec_(query.as_string(None).encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            raise _error_of(result, self.pgconn)
        self.streaming = True

    # --- streaming -------------------------------------------------------------------
    def read(self, timeout: float) -> bytes | None:
        """The next CopyData payload, or None when nothing arrived within ``timeout``."""
        waited = False
        while True:
            nbytes, data = self.pgconn.get_copy_data(1)
            if nbytes > 0:
                return data  # type: ignore[return-value]
            if nbytes == 0:
                if waited:
                    return None
                ready, _, _ = select.select([self.pgconn.socket], [], [], timeout)
                waited = True
                if not ready:
                    return None
                try:
                    self.pgconn.consume_input()
                except OperationalError as exc:
                    raise ReplicationError(f"replication connection lost: {exc}") from None
                continue
            # -1: the server ended the copy (an error follows); -2: connection error
            self.streaming = False
            result = self.pgconn.get_result()
            raise _error_of(result, self.pgconn)

    def send_status(self, written: int, flushed: int, reply: bool = False) -> None:
        message = standby_status(written, flushed, flushed, int(time.time() * 1_000_000), reply)
        try:
            if self.pgconn.put_copy_data(message) != 1 or self.pgconn.flush() != 0:
                raise ReplicationError("cannot send a standby status update")
        except OperationalError as exc:
            raise ReplicationError(f"replication connection lost: {exc}") from None

    def close(self) -> None:
        if self.streaming:
            try:
                self.pgconn.put_copy_end()
                self.pgconn.flush()
            except OperationalError:
                pass
            self.streaming = False
        self.pgconn.finish()

    def __enter__(self) -> ReplicationConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
