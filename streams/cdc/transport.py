"""The wire, and which position may be confirmed on it: step 1 of 4 on the CDC path.

(transport -> pgoutput -> envelope -> reader.) Kept apart from the decoder, as in
Debezium's connector: this module knows the replication protocol, not what a change is.

* :class:`ReplicationConnection` - the replication socket: COPY BOTH over psycopg's
  low-level ``pq`` layer. psycopg has no replication API; since 3.3 its ``pq.PGconn``
  accepts COPY BOTH results, so this speaks the walsender protocol directly: connect with
  ``replication=database``, run replication commands with the simple query protocol,
  then read CopyData frames (blocking on the socket with ``select``, never spinning) and
  write standby status updates. The only I/O of the streaming path besides Kafka.
* The framing inside COPY BOTH (pure functions over bytes): XLogData frames carrying one
  pgoutput message each, primary keepalives, standby status updates. Times on the wire
  are microseconds since 2000-01-01 UTC.
* :class:`AckTracker` - which WAL position may be confirmed to the slot: only what Kafka
  has acknowledged. Transactions are tracked in commit order. A transaction becomes
  confirmable once its Commit was decoded and every message produced for it was
  acknowledged by the broker; the slot's flush position is then the ``end_lsn`` of the
  newest transaction such that it and all older ones are confirmable. Confirming
  ``end_lsn`` (past the commit record) is what makes PostgreSQL skip that transaction
  after a restart; anything not yet confirmed is sent again (at-least-once).
"""

from __future__ import annotations

import select
import struct
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from psycopg import OperationalError, pq, sql

from core.settings import PostgresSettings
from streams.cdc.errors import CdcError, DecodeError, SlotInUseError
from streams.cdc.lsn import format_lsn
from streams.pg.connect import DEFAULT_CONNECT_TIMEOUT_S, application_name


# --- framing inside COPY BOTH ----------------------------------------------------------------
PG_EPOCH_US = int(datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000

_XLOG = struct.Struct("!QQQ")
#: a CopyData frame of WAL: 'w', wal_start, wal_end, send time, then one pgoutput message
XLOG_DATA = 0x77
#: where the pgoutput message starts in an XLogData frame (1 + 3 * 8 bytes)
PAYLOAD_OFFSET = 1 + _XLOG.size
#: wal_start and wal_end of an XLogData frame, read without building an XLogData
xlog_positions = struct.Struct("!QQ").unpack_from
_KEEPALIVE = struct.Struct("!QQB")
_STATUS = struct.Struct("!cQQQQB")


@dataclass(frozen=True, slots=True)
class XLogData:
    wal_start: int
    wal_end: int
    send_time_us: int
    payload: memoryview


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    send_time_us: int
    reply_requested: bool


def parse_copy_message(data: bytes | memoryview) -> XLogData | Keepalive:
    view = memoryview(data)
    kind = view[0]
    if kind == XLOG_DATA:
        start, end, sent = _XLOG.unpack_from(view, 1)
        return XLogData(start, end, sent, view[PAYLOAD_OFFSET:])
    if kind == 0x6B:  # 'k'
        end, sent, reply = _KEEPALIVE.unpack_from(view, 1)
        return Keepalive(end, sent, bool(reply))
    raise DecodeError(f"unexpected replication message type {chr(kind)!r}")


def unix_us_to_pg(unix_us: int) -> int:
    return unix_us - PG_EPOCH_US


def pg_us_to_unix(pg_us: int) -> int:
    return pg_us + PG_EPOCH_US


def standby_status(written: int, flushed: int, applied: int, now_unix_us: int, reply: bool = False) -> bytes:
    """A Standby Status Update ('r'): the server may drop WAL up to ``flushed``."""
    return _STATUS.pack(b"r", written, flushed, applied, unix_us_to_pg(now_unix_us), 1 if reply else 0)


# --- the replication socket --------------------------------------------------------------------
#: libpq parameters of every CDC connection: a peer that vanished (network cut, host lost)
#: is an error within about 30 s, not a socket silent for the kernel's two hours and more
NETWORK_TIMEOUTS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                    "tcp_user_timeout": 30_000}

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
    text = result.error_message.decode(errors="replace").strip() or f"unexpected replication result {result.status.name}"
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

    @classmethod
    def open(cls, pg: PostgresSettings, purpose: str, decoding_work_mem: str = "") -> ReplicationConnection:
        """A replication connection named ``insights-<purpose>``, printing values as values.py expects.
        ``decoding_work_mem``: this session's logical_decoding_work_mem (empty: the server's)."""
        extra = f" -c logical_decoding_work_mem={decoding_work_mem.replace(' ', '')}" if decoding_work_mem else ""
        return cls(
            pg.conninfo(
                replication="database",
                options=SESSION_OPTIONS + extra,
                application_name=application_name(purpose),
                connect_timeout=DEFAULT_CONNECT_TIMEOUT_S,
                **NETWORK_TIMEOUTS,
            )
        )

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

    def create_slot(self, slot: str, export_snapshot: bool, temporary: bool = False) -> CreatedSlot:
        """``temporary``: dropped when this connection closes (a consistent point + snapshot only)."""
        mode = "export" if export_snapshot else "nothing"
        rows = self.command(
            sql.SQL("CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput (SNAPSHOT {})").format(
                sql.Identifier(slot), sql.SQL("TEMPORARY " if temporary else ""), sql.Literal(mode)
            )
        )
        name, point, snapshot, _plugin = rows[0]
        return CreatedSlot(name or slot, point or "0/0", snapshot)

    def start(
        self, slot: str, publication: str, start_lsn: int = 0, binary: bool = False, streaming: bool = False
    ) -> None:
        """``binary``: pgoutput sends column values in their binary send format (PostgreSQL 14+);
        ``streaming``: protocol version 2, large transactions sent while in progress (PostgreSQL 14+)."""
        query = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version {}, publication_names {}, messages 'true'{}{})"
        ).format(
            sql.Identifier(slot),
            sql.SQL(format_lsn(start_lsn)),
            sql.Literal("2" if streaming else "1"),
            sql.Literal(sql.Identifier(publication).as_string(None)),
            sql.SQL(", binary 'true'" if binary else ""),
            sql.SQL(", streaming 'on'" if streaming else ""),
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
            # -1: the server ended the copy (an error follows, or nothing: a walsender of a
            # server shutting down ends the copy cleanly); -2: connection error
            self.streaming = False
            result = self.pgconn.get_result()
            if result is not None and result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.COPY_OUT):
                raise ReplicationError("the server ended the replication stream (shutting down?): connection lost")
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


# --- positions: what may be confirmed to the slot ------------------------------------------------
@dataclass(slots=True)
class _Txn:
    seq: int
    outstanding: int = 0
    end_lsn: int | None = None  # known once the Commit arrived
    abandoned: bool = False  # its stream was lost before its Commit: it will be sent again whole


class AckTracker:
    def __init__(self, confirmed: int = 0) -> None:
        self._txns: deque[_Txn] = deque()
        self._by_seq: dict[int, _Txn] = {}
        self._next_seq = 0
        self._outstanding = 0
        self.confirmed = confirmed
        self.open: _Txn | None = None

    def begin(self) -> int:
        txn = _Txn(self._next_seq)
        self._next_seq += 1
        self._txns.append(txn)
        self._by_seq[txn.seq] = txn
        self.open = txn
        return txn.seq

    def sent(self, seq: int, count: int = 1) -> None:
        self._by_seq[seq].outstanding += count
        self._outstanding += count

    def acked(self, seq: int, count: int = 1) -> None:
        txn = self._by_seq[seq]
        txn.outstanding -= count
        self._outstanding -= count
        if txn.abandoned:
            if txn.outstanding == 0:
                del self._by_seq[seq]
        elif txn.outstanding == 0 and txn.end_lsn is not None:
            self._advance()

    def commit(self, seq: int, end_lsn: int) -> None:
        self._by_seq[seq].end_lsn = end_lsn
        self.open = None
        self._advance()

    def idle_position(self, wal_end: int) -> None:
        """A keepalive while nothing is open or in flight: everything up to it is done.

        Safe because a transaction still in progress on the server commits later, past
        ``wal_end``, and is then decoded in full even if its first change is older.
        """
        if self.open is None and not self._txns and wal_end > self.confirmed:
            self.confirmed = wal_end

    def resume(self) -> int:
        """The stream was lost: where a new one starts, past every transaction whose Commit was decoded.

        The transaction open at the loss is abandoned: the server sends it again whole (with
        the same LSNs); what was produced of it is still acknowledged but confirms nothing.
        Transactions committed and still in flight stay tracked: they confirm the slot once
        Kafka has them, and the new stream skips them (a logical slot started at a position
        skips every transaction whose commit record begins before it).
        """
        txn = self.open
        if txn is not None:
            self.open = None
            self._txns.remove(txn)
            txn.abandoned = True
            if txn.outstanding == 0:
                del self._by_seq[txn.seq]
            self._advance()
        position = self.confirmed
        for txn in self._txns:
            if txn.end_lsn is not None and txn.end_lsn > position:
                position = txn.end_lsn
        return position

    @property
    def in_flight(self) -> int:
        return self._outstanding

    @property
    def in_flight_any(self) -> bool:
        return self._outstanding > 0

    def _advance(self) -> None:
        while self._txns:
            head = self._txns[0]
            if head.end_lsn is None or head.outstanding > 0:
                break
            self._txns.popleft()
            del self._by_seq[head.seq]
            if head.end_lsn > self.confirmed:
                self.confirmed = head.end_lsn
