"""Streamed transactions (protocol v2, ``streaming 'on'``): their encoded events on disk until the commit.

PostgreSQL streams a transaction bigger than ``logical_decoding_work_mem`` while it is still in
progress, in blocks (Stream Start ... Stream Stop) between which other transactions' messages
arrive, and says at the end whether it committed (Stream Commit) or not (Stream Abort). The
reader encodes each change as it arrives, so the commit only has to publish, and keeps the
events here, one file per transaction, so memory stays bounded however big the transaction is.

An event is encoded before its transaction's commit LSN and time exist: it is written with a
placeholder for them (:func:`placeholder`, ``source.commit_lsn`` = ``source.commit_time`` = 0)
and :func:`splice` puts the real ones in at publication. Both envelopes (generic and typed) end
with the ``source`` record, whose last fields are ``commit_lsn``, ``xid``, ``commit_time`` (Avro
longs), then ``schema``, ``table``, ``snapshot`` (the relation's tail, whose length the record
keeps), so the placeholder sits at a known distance from the end.

A subtransaction rolled back inside the streamed transaction (``ROLLBACK TO SAVEPOINT``) is a
Stream Abort with its xid: everything spooled from that subtransaction's first change on is
cut off (its children started after it, and what its parent wrote after it started belongs to
the parent only once the subtransaction is over, which a rollback to a savepoint before it
also undoes), as PostgreSQL's own apply worker does.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from streams.cdc import avro
from streams.cdc.pgoutput import Relation

_HEAD = struct.Struct("!IciIH")  # relation OID, op, key length (-1: None), value length, tail length


def _prefix(slot: str) -> str:
    return f"insights-cdc-{slot}-"


def remove_stale(slot: str, directory: str | None = None) -> int:
    """Remove the spool files a killed reader of ``slot`` left behind; how many. Called by the
    reader that holds the slot (one at a time): the server streams those transactions again."""
    where = directory or tempfile.gettempdir()
    removed = 0
    for name in os.listdir(where):
        if name.startswith(_prefix(slot)) and name.endswith(".spool"):
            try:
                os.unlink(os.path.join(where, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def placeholder(xid: int) -> bytes:
    """``source.commit_lsn``, ``xid``, ``commit_time`` of an event encoded before its commit."""
    return b"\x00" + avro.zigzag(xid) + b"\x00"


def splice(value: bytes, tail_len: int, xid: int, txn: bytes) -> bytes:
    """``value`` with its placeholder replaced by ``txn`` (``envelope.source_txn`` of the commit)."""
    held = len(placeholder(xid))
    cut = len(value) - tail_len - held
    return value[:cut] + txn + value[cut + held :]


@dataclass(frozen=True, slots=True)
class Spooled:
    relation: Relation
    op: str
    key: bytes | None
    value: bytes
    tail_len: int


class TxnSpool:
    """One streamed transaction's events, in arrival order, in a file of its own."""

    def __init__(self, xid: int, slot: str, directory: str | None = None) -> None:
        self.xid = xid
        fd, self.path = tempfile.mkstemp(prefix=f"{_prefix(slot)}{xid}-", suffix=".spool", dir=directory or None)
        self._file: BinaryIO = os.fdopen(fd, "w+b")
        self.count = 0
        #: the relations the events were encoded for, by OID (a handful: kept in memory)
        self._relations: dict[int, Relation] = {}
        #: per (sub)transaction xid, where its first event starts, and how many events came before it
        self._starts: dict[int, tuple[int, int]] = {}

    def append(self, subxid: int, relation: Relation, op: str, key: bytes | None, value: bytes, tail_len: int) -> None:
        if subxid not in self._starts:
            self._starts[subxid] = (self._file.tell(), self.count)
        self._relations[relation.oid] = relation
        self._file.write(_HEAD.pack(relation.oid, op.encode(), -1 if key is None else len(key), len(value), tail_len))
        if key is not None:
            self._file.write(key)
        self._file.write(value)
        self.count += 1

    def abort_subtransaction(self, subxid: int) -> int:
        """Drop ``subxid``'s events and everything spooled after its first one; how many were dropped."""
        start = self._starts.get(subxid)
        if start is None:
            return 0  # nothing of it was streamed
        offset, count = start
        dropped = self.count - count
        self._file.truncate(offset)
        self._file.seek(offset)
        self.count = count
        self._starts = {x: s for x, s in self._starts.items() if s[0] < offset}
        return dropped

    def events(self) -> Iterator[Spooled]:
        """The events in order (read back once, at the commit)."""
        f = self._file
        f.flush()
        f.seek(0)
        read = f.read
        for _ in range(self.count):
            oid, op, key_len, value_len, tail_len = _HEAD.unpack(read(_HEAD.size))
            key = None if key_len < 0 else read(key_len)
            yield Spooled(self._relations[oid], op.decode(), key, read(value_len), tail_len)

    @property
    def size(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        """Remove the file (after the commit was published, or the transaction aborted or abandoned)."""
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
