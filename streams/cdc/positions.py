"""Which WAL position may be confirmed to the slot: only what Kafka has acknowledged.

Transactions are tracked in commit order. A transaction becomes confirmable once its
Commit was decoded and every message produced for it was acknowledged by the broker;
the slot's flush position is then the ``end_lsn`` of the newest transaction such that it
and all older ones are confirmable. Confirming ``end_lsn`` (past the commit record) is
what makes PostgreSQL skip that transaction after a restart; anything not yet confirmed
is sent again (at-least-once).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Txn:
    seq: int
    outstanding: int = 0
    end_lsn: int | None = None  # known once the Commit arrived


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
        if txn.outstanding == 0 and txn.end_lsn is not None:
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
