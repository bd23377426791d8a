"""A hand-specialised Avro binary writer for the one fixed envelope (cdc_change v1).

Generic writers walk the schema for every record and try each union branch for every
map value; for this envelope that is most of the reader's CPU time. The envelope never
changes shape, so its binary form is written directly here. ``codec.make_encoder``
checks on a probe record that this writer's bytes equal fastavro's (and the shared
serde's, after its header) before using it, so a divergence falls back instead of
producing bad data.
"""

from __future__ import annotations

import struct
from typing import Any

_OPS = {"c": b"\x00", "u": b"\x02", "d": b"\x04", "t": b"\x06", "r": b"\x08"}
_DOUBLE = struct.Struct("<d").pack
_names: dict[str, bytes] = {}


def _long(n: int, out: bytearray) -> None:
    if 0 <= n < 64:  # most lengths and counts: one byte
        out.append(n << 1)
        return
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _string(s: str, out: bytearray) -> None:
    raw = s.encode("utf-8")
    _long(len(raw), out)
    out += raw


def _name(s: str) -> bytes:
    cached = _names.get(s)
    if cached is None:
        buf = bytearray()
        _string(s, buf)
        cached = _names[s] = bytes(buf)
    return cached


def _row(row: dict[str, Any] | None, out: bytearray) -> None:
    if row is None:
        out.append(0)
        return
    out.append(2)  # union branch 1: the map
    if row:
        _long(len(row), out)
        for key, value in row.items():
            out += _names.get(key) or _name(key)
            if value is None:
                out.append(0)
            elif value is True:
                out += b"\x02\x01"
            elif value is False:
                out += b"\x02\x00"
            elif type(value) is str:
                out.append(8)
                raw = value.encode("utf-8")
                _long(len(raw), out)
                out += raw
            elif type(value) is int:
                out.append(4)
                _long(value, out)
            elif type(value) is float:
                out.append(6)
                out += _DOUBLE(value)
            else:
                raise TypeError(f"column {key!r}: {type(value).__name__} is not an envelope value")
    out.append(0)


def _strings(items: list[str], out: bytearray) -> None:
    if items:
        _long(len(items), out)
        for item in items:
            out += _names.get(item) or _name(item)
    out.append(0)


def encode_body(value: dict[str, Any]) -> bytes:
    out = bytearray(_OPS[value["op"]])
    _row(value["before"], out)
    _row(value["after"], out)
    _strings(value["unchanged_toast"], out)
    _strings(value["key_columns"], out)
    src = value["source"]
    _long(src["lsn"], out)
    _long(src["commit_lsn"], out)
    _long(src["xid"], out)
    _long(src["commit_time"], out)
    out += _names.get(src["schema"]) or _name(src["schema"])
    out += _names.get(src["table"]) or _name(src["table"])
    out.append(1 if src["snapshot"] else 0)
    return bytes(out)
