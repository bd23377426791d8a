"""Streaming replication framing inside COPY BOTH: XLogData, keepalives, status updates.

Pure functions over bytes. Times on the wire are microseconds since 2000-01-01 UTC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone

from streams.cdc.errors import DecodeError

PG_EPOCH_US = int(datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000

_XLOG = struct.Struct("!QQQ")
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
    if kind == 0x77:  # 'w'
        start, end, sent = _XLOG.unpack_from(view, 1)
        return XLogData(start, end, sent, view[1 + _XLOG.size :])
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
